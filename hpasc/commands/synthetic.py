"""``hpasc-synthetic``: the synthetic data generator's command; its help text is the package
docstring."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.tools import synthetic
from hpasc.tools.synthetic import MAX_SIZE, MIN_SIZE, generate_dataset


def parse_size(text: str) -> tuple[int, int]:
    """argparse type for ``S`` (square) or ``HxW``, each side in MIN_SIZE..MAX_SIZE."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected S or HxW such as 1024 or 768x1024, got {text!r}")
    sides = [int(p) for p in parts]
    if not all(MIN_SIZE <= side <= MAX_SIZE for side in sides):
        raise argparse.ArgumentTypeError(
            f"each side must lie in {MIN_SIZE}..{MAX_SIZE}, got {text!r}")
    return (sides[0], sides[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(synthetic.__doc__, flags=("overwrite",))
    parser.prog = "hpasc-synthetic"
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing); a dataset made there before with the same "
                             "count, size and seed is kept (--overwrite makes it again)")
    parser.add_argument("-n", "--count", type=cli.positive_int, default=8, metavar="N",
                        help="number of images to generate")
    parser.add_argument("--size", type=parse_size, default="1024", metavar="S|HxW",
                        help=f"image size in pixels: S for S×S, or HxW (height x width); "
                             f"each side {MIN_SIZE}..{MAX_SIZE}")
    parser.add_argument("--seed", type=cli.at_least(0), default=0, metavar="K",
                        help="random seed (>= 0); image i depends only on the seed and i")
    return parser


def _run(args: argparse.Namespace) -> None:
    generate_dataset(args.out, args.count, args.size, args.seed, cli.common_options(args))


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
