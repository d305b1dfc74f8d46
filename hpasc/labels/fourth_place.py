"""The 4th place's published label folder, and the rules their code applied to it.

Facts from their public code (CroDoc/HPA2021-data-centric-approach, ``code/utils.py`` and
``code/data_prep.py``), re-implemented here:

- ``relabel/{c}.txt``: manual scores, mapped per class (:data:`MANUAL_MAPS`, else
  :data:`BASE_MAP`); a later line wins; a scored cell gains class c in its labels; a cell that
  carries c but has no line gets :data:`UNSCORED` (0.69). Class 11 (:func:`_manual_eleven`):
  no 0.69, and a cell scored ≥ 0.2 keeps label 11 alone.
- ``relabel/6.txt``: image ids, read at antibody level (``relabel_me6``): an image is listed when
  its last line's score is not 3; every image of a listed image's antibody is listed; the cells
  of class-6 images get 0.51 when listed, else 1.0. The antibody of an image comes from the
  public-HPA table; without one, each listed image stands for itself (a warning says so).
- ``auto-positive-relabel/{c}.p``: class c set to 0.99 and added to the labels;
  ``auto-relabel/{c}.p`` and ``auto-relabel2/{c}.p``: class c set to 0.01.
- Order: rule 6, positives, negatives, manual (1, 12, 8, 9, 15, then any other class), late
  negatives (auto-relabel2), manual 11.
- ``validation/{c}.txt``: the validation set (every cell listed), each score mapped by
  :data:`VALIDATION_MAPS` (the per-class maps ``data_prep`` passes; the repository's README names
  only their default). A validation cell's metric classes are the classes scored for it (not
  8, 9, 12 or 15 at 0.5) and every class 0..17 it does not carry.

A cell's target for class c is its value when a rule set one, else 1.0 if c is in its labels,
else 0. Their validation also took unscored cells from a sort order they did not publish; those
are not reproduced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc.core.classes import NUM_CLASSES
from hpasc.core.errors import InputError
from hpasc.labels.files import read_scores
from hpasc.labels.pickles import read_id_set

log = logging.getLogger(__name__)

FOLDERS = ("relabel", "validation", "auto-positive-relabel", "auto-relabel", "auto-relabel2")
BASE_MAP = {0: 0.0, 1: 0.0, 2: 0.25, 3: 0.5, 4: 0.9, 5: 1.0}
MANUAL_MAPS = {
    1: {0: 0.0, 1: 0.0, 2: 0.4, 3: 0.5, 4: 0.85, 5: 1.0},
    12: {0: 0.0, 1: 0.0, 2: 0.3, 3: 0.75, 4: 1.0, 5: 1.0},
    8: {1: 0.0, 2: 0.5, 3: 1.0},
    9: {0: 0.0, 1: 0.0, 2: 0.5, 3: 0.75, 4: 1.0, 5: 1.0},
    15: {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.6, 4: 1.0, 5: 1.0},
    11: {1: 0.0, 2: 0.05, 3: 0.2, 4: 0.65, 5: 1.0},
}
MANUAL_ORDER = (1, 12, 8, 9, 15)
VALIDATION_BASE = {0: 0.0, 1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}
_COMMON_VALIDATION = {0: 0.0, 1: 0.0, 2: 0.5, 3: 0.8, 4: 1.0, 5: 1.0}
VALIDATION_MAPS = {
    **{c: _COMMON_VALIDATION for c in (1, 2, 3, 4, 5, 6, 8, 12, 15)},
    7: {0: 0.0, 1: 0.0, 2: 0.2, 3: 0.75, 4: 1.0, 5: 1.0},
    9: {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.5, 4: 1.0, 5: 1.0},
    10: {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.8, 4: 1.0, 5: 1.0},
    17: {0: 0.0, 1: 0.0, 2: 0.5, 3: 1.0, 4: 1.0, 5: 1.0},
}
UNSCORED = 0.69
POSITIVE, NEGATIVE = 0.99, 0.01
ANTIBODY_LISTED, ANTIBODY_UNLISTED = 0.51, 1.0
ELEVEN_ALONE_FROM = 0.2
UNMEASURED_AT_HALF = (8, 9, 12, 15)
ANTIBODY_CLASS, ELEVEN = 6, 11
METRIC_CLASSES = slice(0, 18)  # their metric labels: classes 0..17

Scored = list[tuple[str, int]]
"""(id, score) in file order."""


def is_fourth_place_folder(folder: str | os.PathLike) -> bool:
    """A folder laid out as theirs: one of their sub-folders and no ``{class}.txt`` of its own."""
    folder = Path(folder)
    return (folder.is_dir() and any((folder / name).is_dir() for name in FOLDERS)
            and not any(folder.glob("*.txt")))


def score_map(kind: str, class_index: int) -> Mapping[int, float]:
    """The soft value of each score of ``kind`` ("relabel" or "validation") for a class."""
    if kind == "validation":
        return VALIDATION_MAPS.get(class_index, VALIDATION_BASE)
    return MANUAL_MAPS.get(class_index, BASE_MAP)


@dataclass(frozen=True)
class FourthPlaceFolder:
    """The files of their folder, as read (nothing applied yet)."""

    path: Path
    relabel: dict[int, Scored]
    validation: dict[int, Scored]
    positives: dict[int, frozenset[str]]
    negatives: dict[int, frozenset[str]]
    late_negatives: dict[int, frozenset[str]]

    def entries(self) -> int:
        """Every line and every pickled id."""
        scored = sum(len(v) for v in (*self.relabel.values(), *self.validation.values()))
        sets = (*self.positives.values(), *self.negatives.values(), *self.late_negatives.values())
        return scored + sum(len(v) for v in sets)

    def classes(self) -> list[int]:
        return sorted({*self.relabel, *self.validation, *self.positives, *self.negatives, *self.late_negatives})


def _class_files(folder: Path, suffix: str) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    files = {}
    for path in sorted(folder.iterdir()):
        stem = path.name.removesuffix(suffix)
        if path.name == stem or not stem.isdigit() or int(stem) >= NUM_CLASSES:
            log.warning("ignoring %s: files here are named {class}%s, class 0..%d", path, suffix, NUM_CLASSES - 1)
            continue
        files[int(stem)] = path
    return dict(sorted(files.items()))


def read_fourth_place(folder: str | os.PathLike) -> FourthPlaceFolder:
    """Read their folder (any sub-folder may be missing); InputError on a malformed file."""
    folder = Path(folder)
    if not is_fourth_place_folder(folder):
        raise InputError(f"{folder}: not laid out as the 4th place's labels (sub-folders {', '.join(FOLDERS)})")
    relabel = {c: read_scores(p, BASE_MAP if c == ANTIBODY_CLASS else score_map("relabel", c))
               for c, p in _class_files(folder / "relabel", ".txt").items()}
    validation = {c: read_scores(p, score_map("validation", c))
                  for c, p in _class_files(folder / "validation", ".txt").items()}
    sets = {name: {c: read_id_set(p) for c, p in _class_files(folder / name, ".p").items()}
            for name in FOLDERS[2:]}
    return FourthPlaceFolder(folder, relabel, validation, sets["auto-positive-relabel"], sets["auto-relabel"],
                             sets["auto-relabel2"])


def listed_images(entries: Scored, antibody_of: Mapping[str, str] | None) -> set[str]:
    """The images ``relabel/6.txt`` lists: last score not 3, widened to their antibodies' images."""
    listed: set[str] = set()
    for image_id, score in entries:
        if score != 3:
            listed.add(image_id)
        else:
            listed.discard(image_id)
    if antibody_of is None:
        return listed
    antibodies = {antibody_of.get(image_id, image_id) for image_id in listed}
    return {image_id for image_id, antibody in antibody_of.items() if antibody in antibodies}


@dataclass
class TheirTargets:
    """The labels of a dataset's cells after the 4th place's rules, over all 19 classes."""

    values: np.ndarray
    """float32 (cells, 19): the value a rule set, NaN where none did."""
    labels: np.ndarray
    """bool (cells, 19): each cell's label set (image labels, gained and dropped classes)."""
    relabelled: np.ndarray
    """bool (cells, 19): set by a person's score or a pseudo-label set (not by the 0.69/antibody rules)."""
    validation_rows: np.ndarray
    """int: the cells of the validation files, in row order."""
    metric: np.ndarray
    """bool (len(validation_rows), 19): the (cell, class) pairs the validation mAP counts."""
    resolved: dict[str, tuple[int, int]]
    """source name → (ids found among the cells, ids in the source)."""

    def targets(self) -> np.ndarray:
        """float32 (cells, 19): the rule's value, else 1.0 for a label, else 0."""
        return np.where(np.isnan(self.values), self.labels, self.values).astype(np.float32)


class _Rules:
    def __init__(self, cell_ids: Sequence[str], image_ids: Sequence[str], labels: np.ndarray) -> None:
        self.row = {cell_id: i for i, cell_id in enumerate(cell_ids)}
        self.image_ids = np.asarray(image_ids, dtype=object)
        n = len(cell_ids)
        self.values = np.full((n, NUM_CLASSES), np.nan, np.float32)
        self.labels = labels.copy()
        self.relabelled = np.zeros((n, NUM_CLASSES), bool)
        self.resolved: dict[str, tuple[int, int]] = {}

    def rows(self, name: str, ids: Sequence[str] | frozenset[str]) -> np.ndarray:
        found = [self.row[i] for i in ids if i in self.row]
        self.resolved[name] = (len(found), len(ids))
        return np.asarray(found, dtype=np.int64)

    def set(self, rows: np.ndarray, class_index: int, values: float | np.ndarray, person: bool) -> None:
        self.values[rows, class_index] = values
        self.relabelled[rows, class_index] = person

    def antibody_rule(self, entries: Scored, antibody_of: Mapping[str, str] | None) -> None:
        listed = listed_images(entries, antibody_of)
        images = set(self.image_ids)
        self.resolved["relabel/6.txt (images)"] = (len(listed & images), len(listed))
        carrying = np.flatnonzero(self.labels[:, ANTIBODY_CLASS])
        in_listed = np.isin(self.image_ids[carrying], list(listed))
        self.set(carrying, ANTIBODY_CLASS, np.where(in_listed, ANTIBODY_LISTED, ANTIBODY_UNLISTED), False)

    def pseudo(self, name: str, class_index: int, ids: frozenset[str], value: float) -> None:
        rows = self.rows(f"{name}/{class_index}.p", ids)
        self.set(rows, class_index, value, True)
        if value == POSITIVE:
            self.labels[rows, class_index] = True

    def manual(self, class_index: int, entries: Scored) -> None:
        latest = dict(entries)
        rows = self.rows(f"relabel/{class_index}.txt", list(latest))
        mapping = score_map("relabel", class_index)
        unscored = self.labels[:, class_index].copy()
        unscored[rows] = False
        self.set(np.flatnonzero(unscored), class_index, UNSCORED, False)
        values = np.array([mapping[latest[i]] for i in latest if i in self.row], np.float32)
        self.set(rows, class_index, values, True)
        self.labels[rows, class_index] = True

    def manual_eleven(self, entries: Scored) -> None:
        latest = dict(entries)
        rows = self.rows(f"relabel/{ELEVEN}.txt", list(latest))
        values = np.array([MANUAL_MAPS[ELEVEN][latest[i]] for i in latest if i in self.row], np.float32)
        self.set(rows, ELEVEN, values, True)
        alone = rows[values >= ELEVEN_ALONE_FROM]
        self.labels[alone] = False
        self.labels[alone, ELEVEN] = True

    def validation(self, files: dict[int, Scored]) -> tuple[np.ndarray, np.ndarray]:
        scored = np.zeros(self.labels.shape, bool)
        member = np.zeros(len(self.labels), bool)
        for class_index, entries in files.items():
            latest = dict(entries)
            rows = self.rows(f"validation/{class_index}.txt", list(latest))
            mapping = score_map("validation", class_index)
            values = np.array([mapping[latest[i]] for i in latest if i in self.row], np.float32)
            self.set(rows, class_index, values, True)
            unmeasured = class_index in UNMEASURED_AT_HALF
            scored[rows, class_index] = values != 0.5 if unmeasured else True
            member[rows] = True
        rows = np.flatnonzero(member)
        metric = scored[rows]
        metric[:, METRIC_CLASSES] |= ~self.labels[rows][:, METRIC_CLASSES]
        return rows, metric


def apply_their_rules(labels: FourthPlaceFolder, cell_ids: Sequence[str], image_ids: Sequence[str],
                 image_labels: np.ndarray, antibody_of: Mapping[str, str] | None = None) -> TheirTargets:
    """Their rules, in their order, on a dataset's cells (``image_labels``: bool cells × 19)."""
    rules = _Rules(cell_ids, image_ids, image_labels)
    if ANTIBODY_CLASS in labels.relabel:
        if antibody_of is None:
            log.warning("relabel/6.txt is read per image, not per antibody: give the public-HPA table "
                        "(--public-table) to apply it to every image of a listed antibody, as they did")
        rules.antibody_rule(labels.relabel[ANTIBODY_CLASS], antibody_of)
    for class_index, ids in labels.positives.items():
        rules.pseudo("auto-positive-relabel", class_index, ids, POSITIVE)
    for class_index, ids in labels.negatives.items():
        rules.pseudo("auto-relabel", class_index, ids, NEGATIVE)
    others = sorted(set(labels.relabel) - {*MANUAL_ORDER, ANTIBODY_CLASS, ELEVEN})
    for class_index in (*MANUAL_ORDER, *others):
        if class_index in labels.relabel:
            rules.manual(class_index, labels.relabel[class_index])
    for class_index, ids in labels.late_negatives.items():
        rules.pseudo("auto-relabel2", class_index, ids, NEGATIVE)
    if ELEVEN in labels.relabel:
        rules.manual_eleven(labels.relabel[ELEVEN])
    rows, metric = rules.validation(labels.validation)
    return TheirTargets(rules.values, rules.labels, rules.relabelled, rows, metric, rules.resolved)
