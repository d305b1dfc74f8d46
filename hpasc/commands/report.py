"""``hpasc-report``: the command of :mod:`hpasc.tools.report` (its docstring is the help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.tools.report import __doc__ as library_doc
from hpasc.tools.report import write_report


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc.split("\n\n")[0])
    parser.prog = "hpasc-report"
    parser.add_argument("--cells", type=Path, required=True, help="infer.py's --cells-out table (.h5ad/.parquet/.csv)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="report folder (default: {table stem}-report beside the table)")
    parser.add_argument("--threshold", type=cli.at_least(0.0, float), default=0.5,
                        help="a cell is a confident call of a class at this confidence")
    parser.add_argument("--worst", type=cli.positive_int, default=20, help="lowest-quality images listed")
    parser.add_argument("--groups", type=Path, default=None, metavar="CSV",
                        help="a CSV of ID,group (e.g. each image's cell line): one more map panel per group")
    return parser


def _run(args: argparse.Namespace) -> int:
    out = args.out or args.cells.with_name(f"{args.cells.stem}-report")
    index = write_report(args.cells, out, args.threshold, args.worst, args.groups)
    print(f"report: {index}")
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
