"""Segment cells and nuclei in a folder of 4-channel images: {CELLS}/{ID}.png and
{NUCLEI}/{ID}.png, uint16 label images (0 = background; a nucleus carries its cell's id).
Backends: 'hpa' runs HPA's own DPN-UNet segmentator (official weights, downloaded once into the
cache when the network allows); 'classical' needs no weights; 'auto' uses HPA's when its weights
are present, else the classical one. Images already segmented are skipped."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.commands.segment_flags import add_segmentation_flags, segmentation_settings
from hpasc.core import runtime
from hpasc.core.image_folder import scan_images
from hpasc.segmentation.settings import SegmentationSettings


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "device", "overwrite", "shard"))
    cli.add_image_input(parser)
    parser.add_argument("-c", "--cells", type=Path, required=True,
                        help="output folder for the cell label images")
    parser.add_argument("-n", "--nuclei", type=Path, default=None,
                        help="output folder for the nucleus label images (optional)")
    parser.add_argument("--overlays", type=Path, default=None, metavar="DIR",
                        help="also write DIR/{ID}.png (the image with its cells outlined) and DIR/index.html, "
                             "to check the segmentation by eye")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=SegmentationSettings.batch_size,
                        help="images per network batch (hpa backend)")
    add_segmentation_flags(parser)
    cli.add_precision_flag(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    # Imported here: the pool's spawned workers re-import this entry point and must not load torch,
    # and --help need not load the image stack (1.3 s).
    from hpasc.stages.segment.outputs import MaskWriter
    from hpasc.stages.segment.stage import segment_folder

    outputs = MaskWriter(cells=args.cells, nuclei=args.nuclei, overlays=args.overlays)
    settings = segmentation_settings(args, args.batch_size)
    settings.models.check()  # a mistyped weights path is reported before the images are looked at
    folder = scan_images(args.input, args.channels)
    backend, failed = segment_folder(folder, outputs, settings, cli.common_options(args))
    for folder in filter(None, (args.cells, args.nuclei)):
        runtime.write_manifest(folder, "segmentator", vars(args), {"backend": backend, "failed": len(failed)})
    return cli.EXIT_SOME_FAILED if failed else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """``segmentator.py`` / ``hpasc-segment``: parse ``argv`` (default: the command line) and run."""
    cli.run(_run, build_parser().parse_args(argv))
