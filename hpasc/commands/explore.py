"""``hpasc-explore``: the command of :mod:`hpasc.tools.explore` (its docstring is the help text)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.core.image_folder import scan_images
from hpasc.tools.explore import __doc__ as library_doc
from hpasc.tools.explore import explore

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc.split("\n\n")[0])
    parser.prog = "hpasc-explore"
    parser.add_argument("--labels", type=Path, required=True, help="labels CSV (ID,Label), e.g. train.csv")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--dataset", type=Path, help="cell dataset folder (image_cutter.py's output)")
    parser.add_argument("--images", type=Path, help="image folder for segmentation overlays (with --masks)")
    parser.add_argument("--masks", type=Path, help="cell mask folder for overlays (with --images)")
    cli.add_channels_flag(parser)
    parser.add_argument("--mask-suffix", default="", help="mask file name is {ID}{suffix}.png")
    parser.add_argument("--examples", type=cli.positive_int, default=4, help="example cells per class")
    parser.add_argument("--overlays", type=cli.positive_int, default=4, help="images with overlays")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.images is None) != (args.masks is None):
        parser.error("--images and --masks go together")
    return args


def _run(args: argparse.Namespace) -> int:
    images = None if args.images is None else scan_images(args.images, args.channels)
    written = explore(args.labels, args.out, args.dataset, images, args.masks, args.mask_suffix,
                      args.examples, args.overlays, cli.common_options(args))
    figures = [p.relative_to(args.out).as_posix() for p in written]
    runtime.write_manifest(args.out, "explore", vars(args), {"figures": figures})
    log.info("wrote %d figures and %s", len(written), args.out / "index.html")
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, parse_args(argv))


if __name__ == "__main__":
    main()
