"""The segmentation flags of segmentator.py and infer.py: the backend, where HPA's weights come
from, and the scale of HPA's post-processing. Light to import, as the entry points must be."""

from __future__ import annotations

import argparse
from pathlib import Path

BACKENDS = ("auto", "hpa", "classical")


def add_segmentation_flags(parser: argparse.ArgumentParser) -> None:
    """--backend and where HPA's weights come from (segmentator.py, infer.py)."""
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="segmentation: hpa (HPA's networks), classical (no weights), auto (hpa "
                             "when its weights are present, else classical)")
    parser.add_argument("--nuclei-model", type=Path, default=None,
                        help="HPA nuclei weights (dpn_unet_nuclei_v1.pth; default: from the cache)")
    parser.add_argument("--cell-model", type=Path, default=None,
                        help="HPA cell weights (dpn_unet_cell_3ch_v1.pth; default: from the cache)")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="cache folder of HPA's weights (default: $HPASC_CACHE/segmentation "
                             "or ~/.cache/hpasc/segmentation)")
    parser.add_argument("--weights-url", default=None, metavar="URL",
                        help="download missing weights from URL/{file name} (a mirror) "
                             "instead of Zenodo record 4665863")
    parser.add_argument("--label-scale", type=_label_scale, default=1.0, metavar="S",
                        help="hpa backend: run HPA's post-processing on its maps shrunk by S (e.g. 0.25: "
                             "about 8x less CPU per image), cell edges refined at full size; 1 = HPA's "
                             "exact masks")


def _label_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.05 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a scale between 0.05 and 1, got {value:g}")
    return value
