"""The competition's output: RLE masks (:mod:`~hpasc.submission.rle`), the submission file's
rows (:mod:`~hpasc.submission.rows`, its one reader and writer, and the sample submission's),
its check (:mod:`~hpasc.submission.check`), instance matching (:mod:`~hpasc.submission.matching`)
and the competition metric (:mod:`~hpasc.submission.metric`)."""
