"""``hpasc-pseudo-label``: negative pseudo-labels and positive mining from a trained model (see
:mod:`hpasc.tools.pseudo_label`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.tools.pseudo_label import (CELL_CHOICES, DEFAULT_POSITIVE_CUTOFF, DEFAULT_POSITIVE_VALUE, LABELLED_CLASSES,
                                      PseudoLabelRun, PseudoRule, pseudo_label_dataset)


def rule_from_args(args: argparse.Namespace) -> PseudoRule:
    return PseudoRule(
        negative_cutoff=args.negative_cutoff, negative_value=args.negative_value,
        positive_class=args.positive_class,
        positive_cutoff=DEFAULT_POSITIVE_CUTOFF if args.positive_cutoff is None else args.positive_cutoff,
        positive_value=DEFAULT_POSITIVE_VALUE if args.positive_value is None else args.positive_value)


def _run(args: argparse.Namespace) -> int:
    rule = rule_from_args(args)
    run = PseudoLabelRun(args.checkpoint, args.dataset, args.out, rule, args.cells, args.batch_size,
                         cli.precision_from_args(args))
    totals = pseudo_label_dataset(run, cli.common_options(args))
    runtime.write_manifest(args.out, "pseudo_label", vars(args),
                           {"checkpoint_epoch": totals["checkpoint_epoch"],
                            **{k: totals[k] for k in ("cells", "negatives", "positives")}})
    mined = "" if rule.positive_class is None else f", {totals['positives']} class-{rule.positive_class} positives"
    runtime.log_done(f"{totals['cells']} {args.cells} cells scored: {totals['negatives']} negative pseudo-labels in "
                     f"{totals['classes']} classes{mined}", 0, args.out)
    return cli.EXIT_OK


def _fraction(open_interval: bool) -> Callable[[str], float]:
    """argparse type: a number in (0, 1) when ``open_interval`` (a cutoff), else in [0, 1] (a value)."""
    return cli.in_range(0.0, 1.0, open_low=open_interval, open_high=open_interval)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(
        "Score the cells of a dataset with a checkpoint and write a pseudo-label folder for "
        "train_me.py/finetuner.py --pseudo: image-label classes that a cell scores below "
        "--negative-cutoff are forced to --negative-value, and (with --positive-class) cells of "
        "images without that label scoring at least --positive-cutoff get --positive-value. "
        "Writes {class}.txt for classes 0..17 ('CELL_ID VALUE'), summary.csv and manifest.json.",
        flags=("workers", "device"))
    parser.prog = "hpasc-pseudo-label"
    # Not the common --overwrite: an existing folder is an error here, not a skipped item.
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the label files already in DIR (without it such a folder is an error)")
    cli.add_model_and_dataset(parser, split=True)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the pseudo-label files")
    parser.add_argument("--cells", choices=CELL_CHOICES, default="train",
                        help="which kept cells to pseudo-label: those of the split's training images, "
                             "of its validation images, or all")
    parser.add_argument("--negative-cutoff", type=_fraction(True), default=0.3, metavar="P",
                        help="an image-label class scoring below this in a cell is a negative there")
    parser.add_argument("--negative-value", type=_fraction(False), default=0.01, metavar="V",
                        help="the soft label written for a negative")
    parser.add_argument("--positive-class", type=cli.class_index(LABELLED_CLASSES), default=None, metavar="CLASS",
                        help="mine positives of this class (0..17, e.g. 11 Mitotic spindle) in images "
                             "not labelled with it (default: no mining)")
    parser.add_argument("--positive-cutoff", type=_fraction(True), default=None, metavar="P",
                        help=f"a cell scoring at least this is a mined positive (default: "
                             f"{DEFAULT_POSITIVE_CUTOFF}; needs --positive-class)")
    parser.add_argument("--positive-value", type=_fraction(False), default=None, metavar="V",
                        help=f"the soft label written for a mined positive (default: "
                             f"{DEFAULT_POSITIVE_VALUE}; needs --positive-class)")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=64, help="cells per batch")
    cli.add_precision_flag(parser, compiles=True)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.positive_class is None:
        given = [flag for flag, value in (("--positive-cutoff", args.positive_cutoff),
                                          ("--positive-value", args.positive_value)) if value is not None]
        if given:
            parser.error(f"{' and '.join(given)}: only used with --positive-class")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, parse_args(argv))


if __name__ == "__main__":
    main()
