"""Where a run's soft labels come from: the folder whose format brings its own target set (the
4th place's published folder with their rules, when one is given), then pseudo-label folders, then
manual relabel folders (a manual score beats a pseudo-label of the same cell and class), mapped
through a score map."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpasc.cells.provenance import Provenance, read_provenance, same_cell_ids
from hpasc.core.classes import label_matrix
from hpasc.core.errors import InputError
from hpasc.labels.folders import LabelSet, ScoreMap, merge_label_sets, read_score_map
from hpasc.labels.formats import SPEC, DatasetCells, LabelFormat, TargetSet, label_format
from hpasc.labels.public_table import antibody_of_images
from hpasc.stages.train.data import CellSet
from hpasc.stages.train.targets import Targets, apply_overrides, build_targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSources:
    """``label_format``: how a ``relabel`` folder is read: ``spec`` ({class}.txt files),
    ``4th-place`` (their folder layout and rules), ``auto`` (their layout is recognised)."""

    relabel: tuple[Path, ...] = ()
    pseudo: tuple[Path, ...] = ()
    score_map: Path | None = None
    label_format: str = "auto"
    public_table: Path | None = None
    allow_foreign_ids: bool = False
    """Apply ids made on another segmentation than the dataset's (see :func:`check_segmentation`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"relabel": [str(Path(p).resolve()) for p in self.relabel],
                "pseudo": [str(Path(p).resolve()) for p in self.pseudo],
                "score_map": str(Path(self.score_map).resolve()) if self.score_map else None,
                "label_format": self.label_format,
                "public_table": str(Path(self.public_table).resolve()) if self.public_table else None,
                "allow_foreign_ids": self.allow_foreign_ids}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabelSources:
        def path(key: str) -> Path | None:
            return Path(values[key]) if values.get(key) else None
        return cls(tuple(map(Path, values.get("relabel", ()))), tuple(map(Path, values.get("pseudo", ()))),
                   path("score_map"), values.get("label_format", values.get("recipe", "auto")), path("public_table"),
                   bool(values.get("allow_foreign_ids", False)))

    def plus(self, relabel: Sequence[Path], pseudo: Sequence[Path]) -> LabelSources:
        """These sources with more folders appended (later folders win)."""
        return dataclasses.replace(self, relabel=self.relabel + tuple(relabel), pseudo=self.pseudo + tuple(pseudo))

    def folders(self) -> list[tuple[Path, LabelFormat]]:
        """Each folder with its format, in the order they apply: pseudo-labels (SPEC folders), then
        the relabel folders (``label_format``: auto, or the format they must have)."""
        return [(folder, SPEC) for folder in self.pseudo] + [(f, label_format(f, self.label_format))
                                                             for f in self.relabel]


@dataclass(frozen=True)
class CellLabels:
    """A dataset's labels for training: soft targets, each cell's label set (the sampler's pools)
    and, when the labels bring one, the validation cells and the (cell, class) pairs their mAP counts."""

    targets: Targets
    label_lists: list[list[int]]
    validation_rows: np.ndarray | None = None
    metric: np.ndarray | None = None


def load_labels(cells: CellSet, outputs: Sequence[int], sources: LabelSources) -> CellLabels:
    """The cells' labels: image-level labels, or the one folder whose format brings its own target
    set (the 4th place's), then every folder's soft values laid over them, later folders winning."""
    folders = sources.folders()
    if not sources.allow_foreign_ids:
        for folder, found in folders:
            check_segmentation(folder, found.made_on(folder), cells)
    score_map = read_score_map(sources.score_map) if sources.score_map else ScoreMap()
    dataset = DatasetCells(cells.cell_ids, cells.table["image_id"].tolist(), label_matrix(cells.image_labels),
                           antibody_of_images(sources.public_table) if sources.public_table else None)
    # A list, not a dict by folder: a folder given twice applies twice, in the order given.
    read = [(folder, found, found.read(folder, dataset, score_map)) for folder, found in folders]
    whole = [(folder, result.targets) for folder, found, result in read if found.brings_targets]
    if len(whole) > 1:
        raise InputError(f"more than one folder brings a whole target set of its own: "
                         f"{', '.join(str(folder) for folder, _ in whole)}; give one of them")
    layered = [result.overrides for _, found, result in read if not found.brings_targets]
    labels = _with_overrides(cells, outputs, whole[0][1] if whole else None, merge_label_sets(layered))
    if layered:
        log.info("soft labels: %d (cell, class) values from %d folder(s)", labels.targets.applied, len(layered))
    if labels.targets.unknown:
        log.warning("%d labelled (cell, class) entries name cells that are not in the dataset's "
                    "split; they are ignored", labels.targets.unknown)
    return labels


def _with_overrides(cells: CellSet, outputs: Sequence[int], whole: TargetSet | None,
                    overrides: LabelSet) -> CellLabels:
    if whole is None:
        return CellLabels(build_targets(cells.cell_ids, cells.image_labels, outputs, overrides), cells.image_labels)
    columns = list(outputs)
    targets = Targets(whole.values[:, columns], whole.relabelled[:, columns], 0)
    label_lists = [np.flatnonzero(row).tolist() for row in whole.labels]
    return CellLabels(apply_overrides(targets, cells.cell_ids, outputs, overrides), label_lists,
                      whole.validation_rows, whole.metric[:, columns])


def check_segmentation(folder: Path, made_on: Provenance | None, cells: CellSet) -> None:
    """Refuse labels whose ids were made on other masks than a dataset's cells (InputError): an id
    ``{ID}_{k}`` names another cell on another segmentation. Folders and datasets without a
    record (``segmentation.json``) cannot be checked: a warning says so."""
    if made_on is None:
        log.warning("%s has no segmentation record: its ids are applied by name, unchecked; if they were made "
                    "on other masks than the dataset's they name other cells (see hpasc-labels remap)", folder)
        return
    for store in cells.stores:
        used_on = read_provenance(store.root)
        if used_on is None:
            log.warning("%s has no segmentation record: cannot check that the ids of %s (made on %s) "
                        "name its cells", store.root, folder, made_on.describe())
        elif not same_cell_ids(made_on, used_on):
            raise InputError(f"{folder}: its cell ids were made on {made_on.describe()}, but {store.root} "
                             f"was cut from {used_on.describe()}, where they name other cells; carry them "
                             "over with 'hpasc-labels remap', or pass --allow-foreign-ids")
