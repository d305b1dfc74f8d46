"""Command line of the label tools: ``python -m hpasc.labels inspect --help``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc import cli
from hpasc.download import antibody_of_images
from hpasc.labels.summary import inspect_labels


def _inspect_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser("Print what a label folder holds (SPEC {class}.txt files, or the 4th place's "
                              "published folder): per class and source the entries, the distinct cells by "
                              "soft value and, with --dataset, how many ids name the dataset's cells. The "
                              "last line is 'labels: N entries, M classes' (every line and pickled id).")
    parser.add_argument("folder", type=Path, metavar="DIR", help="the label folder")
    parser.add_argument("--dataset", type=Path, default=None, metavar="D",
                        help="a cell dataset (image_cutter.py's output) to resolve the ids against")
    parser.add_argument("--public-table", type=Path, default=None, metavar="CSV",
                        help="the public-HPA table, for the 4th place's class-6 rule per antibody")
    return parser


def _inspect(args: argparse.Namespace) -> int:
    antibody_of = antibody_of_images(args.public_table) if args.public_table else None
    for line in inspect_labels(args.folder, args.dataset, antibody_of):
        print(line)
    return cli.EXIT_OK


COMMANDS: dict[str, cli.Subcommand] = {"inspect": (_inspect_parser, _inspect, "what a label folder holds")}


def main(argv: Sequence[str] | None = None) -> None:
    cli.dispatch("python -m hpasc.labels", "Tools for cell label folders.", COMMANDS, argv)


if __name__ == "__main__":
    main()
