"""The segmentator stage (``stage.py``) over :mod:`hpasc.segmentation`, where its masks and pictures
go (``outputs.py``), and the agreement of two mask folders (``agreement.py``)."""
