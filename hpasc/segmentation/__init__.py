"""Cell segmentation: HPA's DPN-UNet segmentator reimplemented natively, and a classical backend.

- ``DPNUNet`` (network), ``load_hpa_model`` (weights): HPA's networks and their official weights;
- ``prepare``/``restore`` (scaling) and ``HpaNetworks`` (predict): running them as HPA does;
- ``label_cell`` (labelling): HPA's post-processing of the two predictions into label images;
- ``segment_classical`` (classical): a segmentation that needs no weights;
- ``Segmenter`` (segmenter), ``SegmentationSettings`` (settings): the one path from images to
  masks that segmentator.py and infer.py share (the segment and infer stages both stand on it).

torch-dependent names are imported on first use, so the classical path never loads torch.
"""

from __future__ import annotations

import importlib

_LOCATIONS = {
    "DPNUNet": "network",
    "load_hpa_model": "weights",
    "resolve_weights": "weight_files",
    "HpaNetworks": "predict",
    "prepare": "scaling",
    "restore": "scaling",
    "label_cell": "labelling",
    "segment_classical": "classical",
    "Segmenter": "segmenter",
    "SegmentationSettings": "settings",
}
__all__ = sorted(_LOCATIONS)


def __getattr__(name: str):
    if name not in _LOCATIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
