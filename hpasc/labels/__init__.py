"""Cell labels from every source: SPEC label files (``files``), the 4th place's published folder
and its rules (``fourth_place``), their pickled id sets (``pickles``); ``python -m hpasc.labels``."""
