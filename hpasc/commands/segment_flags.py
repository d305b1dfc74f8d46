"""The segmentation flags of segmentator.py and infer.py: the backend, where HPA's weights come
from, and the scale of HPA's post-processing. Light to import, as the entry points must be."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpasc.commands import cli
from hpasc.segmentation.settings import BACKENDS, EXACT, ModelFiles, SegmentationSettings, check_label_scale


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
    parser.add_argument("--label-scale", type=_label_scale, default=EXACT, metavar="S",
                        help="hpa backend: run HPA's post-processing on its maps shrunk by S (e.g. 0.25: "
                             "about 8x less CPU per image), cell edges refined at full size; 1 = HPA's "
                             "exact masks")


def segmentation_settings(args: argparse.Namespace, batch_size: int) -> SegmentationSettings:
    """The flags above (and ``--precision``) as the typed settings the Segmenter takes."""
    models = ModelFiles(nuclei=args.nuclei_model, cells=args.cell_model, cache_dir=args.weights_dir,
                        url=args.weights_url)
    return SegmentationSettings(args.backend, models, args.label_scale, batch_size, cli.precision_from_args(args))


def _label_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    try:
        return check_label_scale(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
