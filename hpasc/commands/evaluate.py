"""``hpasc-evaluate``: the command of :mod:`hpasc.submission.metric` (its docstring is the help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.submission.metric import IOU_THRESHOLD, RULES, report, score_submission_files
from hpasc.submission.metric import __doc__ as library_doc


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc.split("\n\n")[0])
    parser.prog = "hpasc-evaluate"
    parser.add_argument("--submission", type=Path, required=True, help="the submission.csv to score")
    parser.add_argument("--truth", type=Path, required=True,
                        help="truth folder: {ID}.png cell masks and cells.csv (ID,mask_id,Label)")
    parser.add_argument("--truth-suffix", default="", metavar="SUFFIX",
                        help="the masks are {ID}{SUFFIX}.png, e.g. _cellmask for HPA-style mask folders")
    parser.add_argument("--truth-labels", type=Path, default=None, metavar="CSV",
                        help="the cells' classes (ID,mask_id,Label; default: cells.csv in the truth folder)")
    parser.add_argument("--rules", choices=RULES, default="open-images",
                        help="open-images (the competition's: predictions of classes absent from the "
                             "image, empty masks and NaN confidences are ignored) or strict (all count)")
    parser.add_argument("--iou-threshold", type=cli.in_range(0.5, 1.0, open_low=True), default=IOU_THRESHOLD,
                        help="mask IoU a prediction needs to match a truth cell (above 0.5)")
    return parser


def _run(args: argparse.Namespace) -> None:
    result = score_submission_files(args.submission, args.truth, cli.common_options(args), args.truth_suffix,
                            args.truth_labels, args.iou_threshold, args.rules)
    print("\n".join(report(result)))


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
