"""infer.py's ``main``: arguments → :func:`~hpasc.inference.stage.infer_folder`, then the
submission's own check."""

from __future__ import annotations

import argparse
import logging

from hpasc import cli, runtime
from hpasc.check_submission import check_submission
from hpasc.inference.stage import InferSettings, infer_folder
from hpasc.segmentation.stage import model_files_from_args
from hpasc.submission import read_sample_submission, read_submission

log = logging.getLogger(__name__)


def infer_entry(args: argparse.Namespace) -> int:
    settings = InferSettings(backend=args.backend, models=model_files_from_args(args),
                             batch_size=args.batch_size, segmentation_batch=args.segmentation_batch,
                             tta=args.tta, postprocessing=not args.no_postprocessing,
                             save_masks=args.save_masks, mixed_precision=not args.no_amp)
    options = runtime.CommonOptions.from_args(args)
    sample = None if args.sample_submission is None else read_sample_submission(args.sample_submission)
    failures = infer_folder(args.input, args.ensemble, args.output, sample, settings, options)
    problems = check_submission(read_submission(args.output), None, sample and sample.order)
    for problem in problems:
        log.error("submission check: %s", problem)
    log.info("wrote %s (%d images, %d failed)", args.output, len(read_submission(args.output)), len(failures))
    return cli.EXIT_SOME_FAILED if failures or problems else cli.EXIT_OK
