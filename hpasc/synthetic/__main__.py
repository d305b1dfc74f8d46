"""The command line of the synthetic data generator, ``python -m hpasc.synthetic``; its help text
is the package docstring."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from hpasc import cli, runtime, synthetic
from hpasc.synthetic import MAX_SIZE, MIN_SIZE, generate_dataset, parse_size

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(synthetic.__doc__)
    # argparse would name the file (__main__.py), which cannot be run on its own.
    parser.prog = "python -m hpasc.synthetic"
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing; existing files are overwritten)")
    parser.add_argument("-n", "--count", type=cli.positive_int, default=8, metavar="N",
                        help="number of images to generate")
    parser.add_argument("--size", type=parse_size, default="1024", metavar="S|HxW",
                        help=f"image size in pixels: S for S×S, or HxW (height x width); "
                             f"each side {MIN_SIZE}..{MAX_SIZE}")
    parser.add_argument("--seed", type=cli.at_least(0), default=0, metavar="K",
                        help="random seed (>= 0); image i depends only on the seed and i")
    return parser


def _run(args: argparse.Namespace) -> None:
    ids = generate_dataset(args.out, args.count, args.size, args.seed,
                           runtime.CommonOptions.from_args(args))
    log.info("wrote %d synthetic images to %s", len(ids), args.out)


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
