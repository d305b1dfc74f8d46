"""Cell-level evaluation against cell-level truth (e.g. the synthetic generator's
``truth/cells.csv``: ``ID,mask_id,Label``): per-class AP over the dataset's cells, their mean, and
the label-prevalence baseline (the mAP of a constant score, which equals each class's share of
positive cells), so a figure can be read against chance.

``hpasc-cell-eval --checkpoint C --dataset D --truth cells.csv`` prints one line
per class and ends with ``cell mAP: <value> (prevalence baseline <value>)``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc.core import runtime
from hpasc.core.classes import CLASS_NAMES, NEGATIVE
from hpasc.core.errors import InputError
from hpasc.models.precision import Precision
from hpasc.models.runner import ModelRunner
from hpasc.cellstore.split import read_split
from hpasc.stages.train.data import load_cells
from hpasc.stages.train.metrics import class_average_precision, mean_average_precision
from hpasc.stages.train.predict import score_rows
from hpasc.submission.metric import read_truth_table

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CellScore:
    per_class: dict[int, float]
    baseline: dict[int, float]
    cells: int

    @property
    def mean(self) -> float:
        return mean_average_precision(self.per_class)

    @property
    def baseline_mean(self) -> float:
        return mean_average_precision(self.baseline)


def read_cell_truth(path: str | os.PathLike) -> dict[str, list[int]]:
    """``{ID}_{mask_id - 1}`` → the cell's classes, from a truth table (``ID,mask_id,Label``)."""
    return {f"{image_id}_{mask_id - 1}": classes
            for image_id, cells in read_truth_table(path).items() for mask_id, (classes, _) in cells.items()}


def truth_matrix(cell_ids: list[str], truth: dict[str, list[int]]) -> np.ndarray:
    """(N, 19) 0/1 matrix of the cells' true classes; a cell without truth counts as Negative."""
    matrix = np.zeros((len(cell_ids), len(CLASS_NAMES)), np.float32)
    for row, cell_id in enumerate(cell_ids):
        matrix[row, truth.get(cell_id) or [NEGATIVE]] = 1.0
    return matrix


def score_cells(probabilities: np.ndarray, truth: np.ndarray) -> CellScore:
    classes = range(truth.shape[1])
    per_class = class_average_precision(probabilities, truth, classes)
    baseline = {c: float(truth[:, c].mean()) for c in per_class}
    return CellScore(per_class, baseline, len(truth))


def evaluate_cells(checkpoint: Path, dataset: Path, truth_csv: Path, which: str, batch_size: int,
             options: runtime.CommonOptions, precision: Precision = Precision()) -> CellScore:
    runner = ModelRunner.load(checkpoint, runtime.resolve_device(options.device), precision)
    split = read_split(dataset)
    cells = load_cells(split)
    rows = cells.kept_rows(which, split)
    if not rows.size:
        raise InputError(f"{dataset}: no kept cells among the {which} images")
    probabilities = score_rows(runner, cells, rows, batch_size, options)
    ids = [cells.cell_ids[i] for i in rows]
    return score_cells(probabilities, truth_matrix(ids, read_cell_truth(truth_csv)))


def report(score: CellScore) -> str:
    lines = [f"{c:2d} {CLASS_NAMES[c]:<40} AP {ap:.3f}  (prevalence {score.baseline[c]:.3f})"
             for c, ap in sorted(score.per_class.items())]
    lines.append(f"cell mAP: {score.mean:.4f} (prevalence baseline {score.baseline_mean:.4f}, "
                 f"{score.cells} cells)")
    return "\n".join(lines)
