"""Soft per-cell targets: weak image labels, overridden by manual and pseudo relabelling
(label sets read by :mod:`hpasc.labels.folders`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpasc.core.classes import NUM_CLASSES, label_matrix
from hpasc.labels.folders import LabelSet


@dataclass(frozen=True)
class Targets:
    """Soft targets of a cell dataset, one column per output class."""

    values: np.ndarray
    """float32 (n_cells, n_outputs)."""
    relabelled: np.ndarray
    """bool, same shape: True where an override set the value (the sampler's positives come from here)."""
    unknown: int
    """Override entries of output classes whose cell is not in the dataset."""

    @property
    def applied(self) -> int:
        """Override entries that set a value."""
        return int(self.relabelled.sum())


def build_targets(cell_ids: Sequence[str], image_labels: Sequence[Sequence[int]], outputs: Sequence[int],
                  overrides: LabelSet) -> Targets:
    """Weak targets (1.0 for each image label that is an output column) with ``overrides`` applied.

    Overrides of classes that are not output columns are ignored and not counted.
    """
    if len(image_labels) != len(cell_ids):
        raise ValueError(f"{len(cell_ids)} cell ids but {len(image_labels)} label lists")
    _check_outputs(outputs)
    values = label_matrix(image_labels)[:, list(outputs)].astype(np.float32)
    return apply_overrides(Targets(values, np.zeros(values.shape, bool), 0), cell_ids, outputs, overrides)


def _check_outputs(outputs: Sequence[int]) -> None:
    if len(set(outputs)) != len(outputs) or not set(outputs) <= set(range(NUM_CLASSES)):
        raise ValueError(f"outputs {list(outputs)} are not distinct class indices 0..{NUM_CLASSES - 1}")


def apply_overrides(targets: Targets, cell_ids: Sequence[str], outputs: Sequence[int],
                    overrides: LabelSet) -> Targets:
    """``targets`` with ``overrides`` set on top (a new Targets; entries of unknown cells counted)."""
    column = {class_index: j for j, class_index in enumerate(outputs)}
    index = {cell_id: i for i, cell_id in enumerate(cell_ids)}
    if len(index) != len(cell_ids):
        raise ValueError("cell ids are not unique")
    values, relabelled, unknown = targets.values.copy(), targets.relabelled.copy(), targets.unknown
    for class_index, cells in overrides.items():
        j = column.get(class_index)
        if j is None:
            continue
        for cell_id, value in cells.items():
            i = index.get(cell_id)
            if i is None:
                unknown += 1
                continue
            values[i, j] = value
            relabelled[i, j] = True
    return Targets(values, relabelled, unknown)
