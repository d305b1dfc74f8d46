"""``hpasc-cell-eval``: the command of :mod:`hpasc.tools.cell_eval` (its docstring is the help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.stages.train.data import CELL_SETS
from hpasc.tools.cell_eval import __doc__ as library_doc
from hpasc.tools.cell_eval import evaluate_cells, report


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc, flags=("workers", "device"))
    cli.add_model_and_dataset(parser, split=True)
    parser.add_argument("--truth", type=Path, required=True, help="cell truth CSV (ID,mask_id,Label)")
    parser.add_argument("--cells", choices=CELL_SETS, default="validation",
                        help="which images' kept cells to score")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=64, help="cells per batch")
    cli.add_precision_flag(parser, compiles=True)
    return parser


def _run(args: argparse.Namespace) -> int:
    score = evaluate_cells(args.checkpoint, args.dataset, args.truth, args.cells, args.batch_size,
                     cli.common_options(args), cli.precision_from_args(args))
    print(report(score))
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
