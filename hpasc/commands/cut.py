"""Cut every cell of every image into a (4, S, S) 16-bit tile and a table row, stored in a cell
dataset folder (read it with hpasc.open_cells). Per cell: its bounding box padded to a square
(or stretched, --mode resize), pixels outside the cell zeroed (or, --zero others, only those of
other cells: the 4th place's exact crop), resized to S; the 4th place's
border and outlier factors; and 'keep', the training filter. Images already in the dataset are
skipped, so an interrupted run is resumed by running it again."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from pathlib import Path

from hpasc.cells.tile_spec import MODES, THEIR_MARGIN, ZEROING, TileSpec
from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.core.image_folder import scan_images
from hpasc.stages.cut.stage import MaskFolders, cut_folder, default_nuclei_folder, read_labels

DEFAULT = TileSpec()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "overwrite", "shard"))
    cli.add_image_input(parser)
    parser.add_argument("-m", "--masks", type=Path, required=True,
                        help="cell mask folder ({ID}.png, as segmentator.py -c writes)")
    parser.add_argument("--mask-suffix", default="", metavar="SUFFIX",
                        help="cell mask file names are {ID}{SUFFIX}.png (e.g. _cellmask, HPA's; default: {ID}.png)")
    parser.add_argument("-n", "--nuclei", type=Path, default=None,
                        help="nucleus mask folder (default: the sibling *_nuclei folder of -m if "
                             "present, else the border factor is computed from the cell masks)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="cell dataset folder")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=Path, default=None,
                        help="ID,Label CSV of the images (default: train.csv beside the image "
                             "folder, else train.csv or labels.csv inside it)")
    labels.add_argument("--no-labels", action="store_true",
                        help="the images have no labels (e.g. a test set)")
    parser.add_argument("--size", type=cli.positive_int, default=DEFAULT.size, help="tile side S in pixels")
    parser.add_argument("--mode", choices=MODES, default=DEFAULT.mode,
                        help="pad: the box padded to a square keeps the cell's aspect ratio; "
                             "resize: the box is stretched to S x S (the B2 recipe)")
    parser.add_argument("--context", type=cli.at_least(0), default=DEFAULT.context,
                        help="keep this many pixels of the surroundings around each cell")
    parser.add_argument("--zero", choices=ZEROING, default=DEFAULT.zero,
                        help="outside: every pixel outside the cell is zeroed; others: the 4th place's exact "
                             "crop (the box squared plus a --margin, only other cells zeroed, the "
                             "background kept; with --mode pad and no --context)")
    parser.add_argument("--margin", type=cli.at_least(0), default=None,
                        help=f"pixels around the squared box of --zero others (default {THEIR_MARGIN}, theirs)")
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, TileSpec]:
    """The flags and the tile spec they make (a spec the crop rules refuse is a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = TileSpec(size=args.size, mode=args.mode, context=args.context, zero=args.zero, margin=args.margin)
    except ValueError as exc:
        parser.error(f"--size/--mode/--context/--zero/--margin: {exc}")
    return args, spec


def _run(args: argparse.Namespace, spec: TileSpec) -> int:
    nuclei = args.nuclei or default_nuclei_folder(args.masks)
    labels = read_labels(args.input, args.labels, args.no_labels)
    failed = cut_folder(scan_images(args.input, args.channels), MaskFolders(args.masks, nuclei, args.mask_suffix), labels,
                        args.output, spec, cli.common_options(args))
    runtime.write_manifest(args.output, "image_cutter", vars(args),
                       {"nuclei_masks": str(nuclei) if nuclei else None, "failed": len(failed)})
    return cli.EXIT_SOME_FAILED if failed else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """``image_cutter.py`` / ``hpasc-cut``: parse ``argv`` (default: the command line) and run."""
    args, spec = parse_args(argv)
    cli.run(functools.partial(_run, spec=spec), args)
