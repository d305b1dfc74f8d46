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

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.cells.provenance import label_folder_made_on
from hpasc.core import atomic, runtime
from hpasc.core.classes import NEGATIVE, NUM_CLASSES, label_matrix
from hpasc.core.errors import InputError
from hpasc.labels.folders import LabelSet, write_label_folder
from hpasc.models.precision import Precision
from hpasc.cellstore.split import read_split

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


@dataclass(frozen=True)
class PseudoLabelRun:
    """Which model scores which cells into which folder, by which rule."""

    checkpoint: Path
    dataset: Path
    out: Path
    rule: PseudoRule
    cells: str = "train"
    """the kept cells of the split's ``train`` images, ``validation`` images, or ``all``"""
    batch_size: int = 64
    precision: Precision = Precision()


def pseudo_label_dataset(run: PseudoLabelRun, options: runtime.CommonOptions) -> dict[str, int]:
    """Score the run's cells and write its pseudo-label folder; returns the totals (cells,
    negatives, positives, the checkpoint's epoch)."""
    # torch is only needed from here on: --help and flag mistakes answer without its 3 s import.
    from hpasc.models.runner import ModelRunner
    from hpasc.stages.train.data import load_cells
    from hpasc.stages.train.predict import score_rows

    check_out_folder(run.out, options.overwrite)
    atomic.remove_abandoned(run.out)
    runner = ModelRunner.load(run.checkpoint, runtime.resolve_device(options.device), run.precision)
    if run.rule.positive_class is not None and run.rule.positive_class not in runner.spec.outputs:
        raise InputError(f"{run.checkpoint}: the model has no output for --positive-class "
                         f"{run.rule.positive_class}")
    split = read_split(run.dataset)
    cells = load_cells(split)
    rows = cells.kept_rows(run.cells, split)
    if not rows.size:
        raise InputError(f"{run.dataset}: no kept cells in the {run.cells} images")
    probabilities = score_rows(runner, cells, rows, run.batch_size, options)
    cell_ids, image_labels = cells.cell_ids, cells.image_labels  # properties that build whole lists
    result = pseudo_labels([cell_ids[i] for i in rows], [image_labels[i] for i in rows], probabilities, run.rule,
                           runner.spec.outputs)
    write_label_folder(run.out, result.labels)
    label_folder_made_on(run.out, cells.stores[0].root)
    summary = result.summary()
    atomic.write_text(run.out / SUMMARY, summary.to_csv(index=False, lineterminator="\n"))
    return {"cells": int(rows.size), "negatives": int(summary["negatives"].sum()),
            "positives": int(summary["positives"].sum()), "classes": int((summary["negatives"] > 0).sum()),
            "checkpoint_epoch": int(runner.checkpoint["epoch"])}
