"""Validation figures over cells and the per-epoch metrics CSV.

Cell-level average precision: a cell is a positive of class c when its (soft) target for c is at
least 0.5; AP is scikit-learn's ``average_precision_score`` of the model's probability for c. The
mAP averages the classes that have both positives and negatives among the cells scored (AP is
undefined otherwise), so the value is comparable across folds only over the same classes: the CSV
keeps every class's AP (empty where undefined).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score

from hpasc.core import atomic
from hpasc.core.classes import NUM_CLASSES

POSITIVE_AT = 0.5


def class_average_precision(probabilities: np.ndarray, targets: np.ndarray, classes: Sequence[int],
                            counted: np.ndarray | None = None) -> dict[int, float]:
    """AP per class for the columns of ``targets`` (one per entry of ``classes``) over the cells
    ``counted`` marks for that column (bool, targets' shape; None: all); a class without positives
    or without negatives among them is left out. ``probabilities`` is (N, 19)."""
    result = {}
    for column, klass in enumerate(classes):
        rows = slice(None) if counted is None else counted[:, column]
        positive = targets[rows, column] >= POSITIVE_AT
        if positive.all() or not positive.any():
            continue
        result[int(klass)] = float(average_precision_score(positive, probabilities[rows, klass]))
    return result


def mean_average_precision(per_class: dict[int, float]) -> float:
    """The mean of the defined per-class APs (NaN when none is defined)."""
    return float(np.mean(list(per_class.values()))) if per_class else float("nan")


METRIC_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_map", "train_cells", "seconds")


def write_metrics_csv(path: str | os.PathLike, history: Sequence[dict]) -> None:
    """Write the whole history (one dict per epoch) as CSV, atomically: rewriting it from the
    checkpoint's history each epoch means a resumed run never repeats or loses a row."""
    columns = list(METRIC_COLUMNS) + [f"ap_{c}" for c in range(NUM_CLASSES)]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for entry in history:
        row = {k: _cell(entry.get(k)) for k in METRIC_COLUMNS}
        row.update({f"ap_{c}": _cell(entry.get("ap", {}).get(str(c))) for c in range(NUM_CLASSES)})
        writer.writerow(row)
    atomic.write_text(path, out.getvalue())


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
