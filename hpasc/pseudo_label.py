"""Negative pseudo-labels and positive mining from a trained model (the 4th place's "auto-relabel").

Image-level labels say a class is somewhere in the image, not in every cell. A model trained on
them still learns which cells show the pattern, so its low scores mark the cells that carry an
image label without showing it:

- **negatives**: a cell whose image is labelled with class c (c != 18: Negative is the absence of
  the others, never a pseudo-label of its own) and whose probability for c is *below*
  ``negative_cutoff`` gets c forced to ``negative_value`` (0.01). A cell scoring exactly the
  cutoff keeps its image label.
- **positives** (one class, e.g. 11 Mitotic spindle, which the image labels often miss because
  only a few cells of an image divide): a cell of an image *not* labelled with that class whose
  probability is *at least* ``positive_cutoff`` gets ``positive_value`` (0.99) for it.

Probabilities are compared in their own precision (float32 from the model), so a score that reads
as the cutoff counts as the cutoff. Only classes the model has an output for are pseudo-labelled:
a class it does not score says nothing about a cell.

The result is a pseudo-label folder as train_me.py and finetuner.py read with ``--pseudo DIR``:
``{class}.txt`` for every class 0..17 (possibly empty, so that a re-run with ``--overwrite``
replaces every file of the previous run), lines ``CELL_ID VALUE`` with a decimal point; plus
``summary.csv`` (per class: negatives, positives, cells_considered = the cells whose value for the
class the rule looked at) and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc import atomic, cli, runtime
from hpasc.cells.split import read_split
from hpasc.classes import NEGATIVE, NUM_CLASSES, label_matrix
from hpasc.errors import InputError
from hpasc.segmentation.provenance import label_folder_made_on
from hpasc.labels.folders import LabelSet, write_label_folder
from hpasc.models.precision import add_precision_flag, precision_from_args

log = logging.getLogger(__name__)

LABELLED_CLASSES = range(NEGATIVE)
"""The classes a pseudo-label can be about: 0..17."""
SUMMARY = "summary.csv"
CELL_CHOICES = ("train", "validation", "all")
DEFAULT_POSITIVE_CUTOFF, DEFAULT_POSITIVE_VALUE = 0.9, 0.99


@dataclass(frozen=True)
class PseudoRule:
    """The cutoffs and forced values; ``positive_class`` None means no positive mining."""

    negative_cutoff: float = 0.3
    negative_value: float = 0.01
    positive_class: int | None = None
    positive_cutoff: float = DEFAULT_POSITIVE_CUTOFF
    positive_value: float = DEFAULT_POSITIVE_VALUE

    def __post_init__(self) -> None:
        if self.positive_class is not None and self.positive_class not in LABELLED_CLASSES:
            raise ValueError(f"positive class {self.positive_class} outside 0..{NEGATIVE - 1}")
        for name in ("negative_cutoff", "positive_cutoff"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} {getattr(self, name)} outside (0, 1)")
        for name in ("negative_value", "positive_value"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} outside [0, 1]")


@dataclass(frozen=True)
class PseudoLabels:
    """What the rule decided for each (cell, class): boolean (cells, 19) masks."""

    cell_ids: list[str]
    negative: np.ndarray
    positive: np.ndarray
    considered: np.ndarray
    rule: PseudoRule

    @property
    def labels(self) -> LabelSet:
        """Class -> cell id -> forced value, with an entry (maybe empty) for every class 0..17."""
        labels: LabelSet = {}
        for c in LABELLED_CLASSES:
            labels[c] = {self.cell_ids[i]: self.rule.negative_value
                         for i in np.flatnonzero(self.negative[:, c])}
            labels[c].update((self.cell_ids[i], self.rule.positive_value)
                             for i in np.flatnonzero(self.positive[:, c]))
        return labels

    def summary(self) -> pd.DataFrame:
        """One row per class 0..17: class, negatives, positives, cells_considered."""
        classes = list(LABELLED_CLASSES)
        return pd.DataFrame({"class": classes,
                             "negatives": self.negative[:, classes].sum(axis=0),
                             "positives": self.positive[:, classes].sum(axis=0),
                             "cells_considered": self.considered[:, classes].sum(axis=0)})


def pseudo_labels(cell_ids: Sequence[str], image_labels: Sequence[Sequence[int]], probabilities: np.ndarray,
                  rule: PseudoRule, classes: Collection[int] = LABELLED_CLASSES) -> PseudoLabels:
    """Apply ``rule`` to cells with these image labels and (cells, 19) class-order ``probabilities``.

    ``classes``: the classes the model scores (others get no pseudo-labels). Raises ValueError for
    inconsistent lengths or shapes, or a positive class that is not among ``classes``.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape != (len(cell_ids), NUM_CLASSES) or len(image_labels) != len(cell_ids):
        raise ValueError(f"{len(cell_ids)} cells, {len(image_labels)} label lists and probabilities of "
                         f"shape {probabilities.shape}; expected ({len(cell_ids)}, {NUM_CLASSES})")
    if rule.positive_class is not None and rule.positive_class not in classes:
        raise ValueError(f"positive class {rule.positive_class} is not among the scored classes")
    scored = np.zeros(NUM_CLASSES, dtype=bool)
    scored[[c for c in classes if c in LABELLED_CLASSES]] = True
    hot = label_matrix(image_labels)
    considered = hot & scored
    # NumPy compares an array with a Python float in the array's precision, so float32(0.9) is
    # "at 0.9" as the module docstring promises.
    negative = considered & (probabilities < rule.negative_cutoff)
    positive = np.zeros_like(negative)
    if rule.positive_class is not None:
        c = rule.positive_class
        positive[:, c] = ~hot[:, c] & (probabilities[:, c] >= rule.positive_cutoff)
        considered[:, c] = True
    return PseudoLabels(list(cell_ids), negative, positive, considered, rule)


# --- the command ------------------------------------------------------------------------------


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or that already holds label files (without --overwrite)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    # Hidden names are atomic writes' temporaries, never label files.
    existing = sorted(p.name for p in out.glob("*.txt") if not p.name.startswith(".")) if out.is_dir() else []
    if existing and not overwrite:
        raise InputError(f"{out} already holds label files ({', '.join(existing[:3])}"
                         f"{', ...' if len(existing) > 3 else ''}); use --overwrite to replace them")


def rule_from_args(args: argparse.Namespace) -> PseudoRule:
    return PseudoRule(
        negative_cutoff=args.negative_cutoff, negative_value=args.negative_value,
        positive_class=args.positive_class,
        positive_cutoff=DEFAULT_POSITIVE_CUTOFF if args.positive_cutoff is None else args.positive_cutoff,
        positive_value=DEFAULT_POSITIVE_VALUE if args.positive_value is None else args.positive_value)


def _run(args: argparse.Namespace) -> int:
    # torch is only needed from here on: --help and flag mistakes answer without its 3 s import.
    from hpasc.models.runner import ModelRunner
    from hpasc.training.data import load_cells
    from hpasc.training.predict import score_rows

    options = runtime.CommonOptions.from_args(args)
    rule = rule_from_args(args)
    check_out_folder(args.out, options.overwrite)
    atomic.remove_abandoned(args.out)
    runner = ModelRunner.load(args.checkpoint, runtime.resolve_device(options.device), precision_from_args(args))
    spec = runner.spec
    if rule.positive_class is not None and rule.positive_class not in spec.outputs:
        raise InputError(f"{args.checkpoint}: the model has no output for --positive-class "
                         f"{rule.positive_class}")
    split = read_split(args.dataset)
    cells = load_cells(split)
    rows = cells.kept_rows(args.cells, split)
    if not rows.size:
        raise InputError(f"{args.dataset}: no kept cells in the {args.cells} images")
    probabilities = score_rows(runner, cells, rows, args.batch_size, options)
    cell_ids, image_labels = cells.cell_ids, cells.image_labels  # properties that build whole lists
    result = pseudo_labels([cell_ids[i] for i in rows], [image_labels[i] for i in rows], probabilities, rule,
                           spec.outputs)

    write_label_folder(args.out, result.labels)
    label_folder_made_on(args.out, cells.stores[0].root)
    summary = result.summary()
    atomic.write_text(args.out / SUMMARY, summary.to_csv(index=False, lineterminator="\n"))
    totals = {"cells": int(rows.size), "negatives": int(summary["negatives"].sum()),
              "positives": int(summary["positives"].sum())}
    runtime.write_manifest(args.out, "pseudo_label", args, {"checkpoint_epoch": runner.checkpoint["epoch"], **totals})
    mined = "" if rule.positive_class is None else \
        f", {totals['positives']} class-{rule.positive_class} positives"
    runtime.log_done(f"{totals['cells']} {args.cells} cells scored: {totals['negatives']} negative pseudo-labels in "
                     f"{int((summary['negatives'] > 0).sum())} classes{mined}", 0, args.out)
    return cli.EXIT_OK


# --- the command line -------------------------------------------------------------------------


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
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="C",
                        help="the model's .pt checkpoint (train_me.py or finetuner.py output)")
    parser.add_argument("--dataset", type=Path, required=True, metavar="D",
                        help="cell dataset folder with its split (image_cutter.py, then data_loader.py)")
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
    add_precision_flag(parser)
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
