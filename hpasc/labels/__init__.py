"""Cell label folders behind one interface (``formats``: :class:`~hpasc.labels.formats.LabelFormat`,
SPEC folders and the 4th place's): SPEC label files (``files``, ``folders``), the 4th place's
published folder and its rules (``fourth_place``), their pickled id sets (``pickles``), and what a
folder holds (``summary``, for ``hpasc-labels inspect``)."""
