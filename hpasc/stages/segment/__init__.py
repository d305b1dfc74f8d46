"""The segmentator stage (``stage.py``) over :mod:`hpasc.segmentation`, and the agreement of two mask
folders (``agreement.py``)."""
