"""Make a public-HPA-style mirror of a Kaggle-layout image folder: 16-bit {ID}_{color}.tif.gz files
and a kaggle_2021.tsv whose Image column holds file:// URL prefixes, so that download_publichpa.py
can run without a network (the demo, tests, an air-gapped copy of HPA data)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core.image_folder import scan_images
from hpasc.stages.download.mirror import make_mirror


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("overwrite",))
    parser.prog = "hpasc-mirror"
    parser.add_argument("-i", "--images", type=Path, required=True,
                        help="image folder ({ID}_{color}.png, ..., or one {ID}.ome.tif per image)")
    cli.add_channels_flag(parser)
    parser.add_argument("--labels", type=Path, default=None,
                        help="ID,Label CSV of the images (default: train.csv inside --images)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for the .tif.gz files and kaggle_2021.tsv (an image whose files there are "
                             "newer than its source is kept; --overwrite writes them again)")
    return parser


def _run(args: argparse.Namespace) -> None:
    labels = args.labels or args.images / "train.csv"
    folder = scan_images(args.images, args.channels)
    print(make_mirror(folder, labels, args.output, cli.common_options(args)))


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
