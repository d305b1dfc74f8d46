"""Cell-level evaluation against cell-level truth (e.g. the synthetic generator's
``truth/cells.csv``: ``ID,mask_id,Label``): per-class AP over the dataset's cells, their mean, and
the label-prevalence baseline (the mAP of a constant score, which equals each class's share of
positive cells), so a figure can be read against chance.

``python -m hpasc.training.cell_eval --checkpoint C --dataset D --truth cells.csv`` prints one line
per class and ends with ``cell mAP: <value> (prevalence baseline <value>)``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc import cli, runtime
from hpasc.cells.split import read_split
from hpasc.classes import CLASS_NAMES, NEGATIVE
from hpasc.errors import InputError
from hpasc.models.precision import Precision, add_precision_flag, precision_from_args
from hpasc.models.runner import ModelRunner
from hpasc.submission.metric import read_truth_table
from hpasc.training.data import CELL_SETS, load_cells
from hpasc.training.metrics import class_average_precision, mean_average_precision
from hpasc.training.predict import score_rows

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


def evaluate(checkpoint: Path, dataset: Path, truth_csv: Path, which: str, batch_size: int,
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


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "device"))
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a train_me.py/finetuner.py checkpoint")
    parser.add_argument("--dataset", type=Path, required=True, help="cell dataset folder with its split")
    parser.add_argument("--truth", type=Path, required=True, help="cell truth CSV (ID,mask_id,Label)")
    parser.add_argument("--cells", choices=CELL_SETS, default="validation",
                        help="which images' kept cells to score")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=64, help="cells per batch")
    add_precision_flag(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    score = evaluate(args.checkpoint, args.dataset, args.truth, args.cells, args.batch_size,
                     runtime.CommonOptions.from_args(args), precision_from_args(args))
    print(report(score))
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
