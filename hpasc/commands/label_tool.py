"""``hpasc-label-tool``: the command of :mod:`hpasc.tools.label_tool` (its docstring is the help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core.classes import NUM_CLASSES
from hpasc.tools.label_tool import LabelToolRun, serve_labels
from hpasc.tools.label_tool import __doc__ as library_doc


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc.split("\n\n")[0], flags=("workers", "device"))
    parser.prog = "hpasc-label-tool"
    parser.add_argument("--dataset", type=Path, required=True, help="a cell dataset folder")
    parser.add_argument("--class", dest="class_index", type=cli.class_index(range(NUM_CLASSES)), required=True,
                        help="the class to score (index 0..18)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the label folder ({class}.txt is appended to)")
    parser.add_argument("--checkpoint", type=Path, help="order cells most uncertain first by this model")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: a free one)")
    cli.add_precision_flag(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    run = LabelToolRun(args.dataset, args.class_index, args.out, args.checkpoint, args.port,
                       cli.precision_from_args(args))
    serve_labels(run, cli.common_options(args))
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
