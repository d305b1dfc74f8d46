"""The pipeline's stages, one folder each, in the order they run: download, segment, cut, split,
train, infer. Each folder's ``stage.py`` holds the stage's runner (typed settings in, files out);
its command in :mod:`hpasc.commands` parses the flags and calls it."""
