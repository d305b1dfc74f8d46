"""Where a run's soft labels come from: the 4th place's published folder with their recipe (when
one is given), then pseudo-label folders, then manual relabel folders (a manual score beats a
pseudo-label of the same cell and class), mapped through a score map."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpasc.classes import label_matrix
from hpasc.download import antibody_of_images
from hpasc.errors import InputError
from hpasc.labels.fourth_place import RecipeResult, apply_recipe, is_fourth_place_folder, read_fourth_place
from hpasc.segmentation.provenance import HPA_PUBLISHED, Provenance, read_provenance, same_cells
from hpasc.training.data import CellSet
from hpasc.labels.folders import ScoreMap, merge_label_sets, read_label_folder, read_score_map
from hpasc.training.targets import Targets, apply_overrides, build_targets

log = logging.getLogger(__name__)
RECIPES = ("auto", "spec", "4th-place")


@dataclass(frozen=True)
class LabelSources:
    """``recipe``: how a ``relabel`` folder is read: ``spec`` ({class}.txt files), ``4th-place``
    (their folder layout and rules), ``auto`` (their layout is recognised)."""

    relabel: tuple[Path, ...] = ()
    pseudo: tuple[Path, ...] = ()
    score_map: Path | None = None
    recipe: str = "auto"
    public_table: Path | None = None
    allow_foreign_ids: bool = False
    """Apply ids made on another segmentation than the dataset's (see :func:`check_segmentation`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"relabel": [str(Path(p).resolve()) for p in self.relabel],
                "pseudo": [str(Path(p).resolve()) for p in self.pseudo],
                "score_map": str(Path(self.score_map).resolve()) if self.score_map else None,
                "recipe": self.recipe,
                "public_table": str(Path(self.public_table).resolve()) if self.public_table else None,
                "allow_foreign_ids": self.allow_foreign_ids}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabelSources:
        def path(key: str) -> Path | None:
            return Path(values[key]) if values.get(key) else None
        return cls(tuple(map(Path, values.get("relabel", ()))), tuple(map(Path, values.get("pseudo", ()))),
                   path("score_map"), values.get("recipe", "auto"), path("public_table"),
                   bool(values.get("allow_foreign_ids", False)))

    def plus(self, relabel: Sequence[Path], pseudo: Sequence[Path]) -> LabelSources:
        """These sources with more folders appended (later folders win)."""
        return dataclasses.replace(self, relabel=self.relabel + tuple(relabel), pseudo=self.pseudo + tuple(pseudo))

    def split_folders(self) -> tuple[Path | None, tuple[Path, ...]]:
        """(the 4th place's folder or None, the SPEC relabel folders)."""
        if self.recipe == "spec":
            return None, self.relabel
        theirs = [f for f in self.relabel if self.recipe == "4th-place" or is_fourth_place_folder(f)]
        if len(theirs) > 1:
            raise InputError(f"more than one folder of the 4th place's labels: {', '.join(map(str, theirs))}")
        if theirs and not is_fourth_place_folder(theirs[0]):
            raise InputError(f"--label-recipe 4th-place: {theirs[0]} is not laid out as theirs "
                             "(relabel/, validation/, auto-relabel/ ...)")
        return (theirs[0] if theirs else None), tuple(f for f in self.relabel if f not in theirs)


@dataclass(frozen=True)
class CellLabels:
    """A dataset's labels for training: soft targets, each cell's label set (the sampler's pools)
    and, when the labels bring one, the validation cells and the (cell, class) pairs their mAP counts."""

    targets: Targets
    label_lists: list[list[int]]
    validation_rows: np.ndarray | None = None
    metric: np.ndarray | None = None


def load_labels(cells: CellSet, outputs: Sequence[int], sources: LabelSources) -> CellLabels:
    """The cells' labels: image-level labels, their recipe's, then the SPEC label folders."""
    theirs, spec_folders = sources.split_folders()
    if not sources.allow_foreign_ids:
        for folder in (*sources.pseudo, *sources.relabel):
            check_segmentation(folder, HPA_PUBLISHED if folder == theirs else read_provenance(folder), cells)
    score_map = read_score_map(sources.score_map) if sources.score_map else ScoreMap()
    sets = [read_label_folder(folder, score_map) for folder in (*sources.pseudo, *spec_folders)]
    overrides = merge_label_sets(sets)
    if theirs is None:
        labels = CellLabels(build_targets(cells.cell_ids, cells.image_labels, outputs, overrides),
                            cells.image_labels)
    else:
        result = _recipe(theirs, cells, sources.public_table)
        columns = list(outputs)
        recipe_targets = Targets(result.targets()[:, columns], result.relabelled[:, columns], 0)
        label_lists = [np.flatnonzero(row).tolist() for row in result.labels]
        labels = CellLabels(apply_overrides(recipe_targets, cells.cell_ids, outputs, overrides), label_lists,
                            result.validation_rows, result.metric[:, columns])
    if sets:
        log.info("soft labels: %d (cell, class) values from %d folder(s)", labels.targets.applied, len(sets))
    if labels.targets.unknown:
        log.warning("%d labelled (cell, class) entries name cells that are not in the dataset's "
                    "split; they are ignored", labels.targets.unknown)
    return labels


def check_segmentation(folder: Path, made_on: Provenance | None, cells: CellSet) -> None:
    """Refuse labels whose ids were made on other masks than a dataset's cells (InputError): an id
    ``{ID}_{k}`` names another cell on another segmentation. Folders and datasets without a
    record (``segmentation.json``) cannot be checked."""
    if made_on is None:
        return
    for store in cells.stores:
        used_on = read_provenance(store.root)
        if used_on is None:
            log.warning("%s has no segmentation record: cannot check that the ids of %s (made on %s) "
                        "name its cells", store.root, folder, made_on.describe())
        elif not same_cells(made_on, used_on):
            raise InputError(f"{folder}: its cell ids were made on {made_on.describe()}, but {store.root} "
                             f"was cut from {used_on.describe()}, where they name other cells; carry them "
                             "over with 'python -m hpasc.labels remap', or pass --allow-foreign-ids")


def _recipe(folder: Path, cells: CellSet, public_table: Path | None) -> RecipeResult:
    labels = read_fourth_place(folder)
    antibody_of = antibody_of_images(public_table) if public_table else None
    result = apply_recipe(labels, cells.cell_ids, cells.table["image_id"].tolist(),
                          label_matrix(cells.image_labels), antibody_of)
    found = sum(f for f, _ in result.resolved.values())
    total = sum(t for _, t in result.resolved.values())
    log.info("the 4th place's labels (%s): %d of %d ids name cells of this dataset; %d validation cells",
             folder, found, total, result.validation_rows.size)
    return result
