"""Label folders behind one interface.

A :class:`LabelFormat` says whether a folder is laid out its way (``detect``), which segmentation
its cell ids were made on (``made_on``), which label files it holds (``files``: what
``hpasc-labels remap`` carries over), what each file holds (``sources``: what ``hpasc-labels
inspect`` prints) and what the folder says of a dataset's cells (``read``: one :class:`FolderLabels` shape for every
format; ``brings_targets`` says whether a format gives a whole target set). Two formats exist:
SPEC folders (``{class}.txt`` of ``CELL_ID SCORE`` lines) and the 4th place's published folder
with their rules. Consumers ask :func:`label_format` and never branch on a layout; a new label
source is one more class here, named in :data:`FORMATS`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from hpasc.cells.provenance import HPA_PUBLISHED, Provenance, read_provenance
from hpasc.core.errors import InputError
from hpasc.labels.files import read_label_lines
from hpasc.labels.folders import LabelSet, ScoreMap, read_label_folder
from hpasc.labels.fourth_place import (ANTIBODY_CLASS, FOLDERS, NEGATIVE, POSITIVE, TheirTargets, apply_their_rules,
                                       is_fourth_place_folder, read_fourth_place, score_map)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetCells:
    """The cells a folder's labels are read against: ids, their images and the images' labels
    (cells × 19, 0/1); ``antibody_of`` (image → antibody) for rules that work per antibody."""

    cell_ids: Sequence[str]
    image_ids: Sequence[str]
    image_labels: np.ndarray
    antibody_of: Mapping[str, str] | None = None


@dataclass(frozen=True)
class TargetSet:
    """A whole target set for a dataset's cells, over all 19 classes: ``values`` (float32 cells × 19),
    which of them the labels set (``relabelled``), each cell's label set (``labels``, bool), the
    validation cells (``validation_rows``) and the (cell, class) pairs their mAP counts (``metric``)."""

    values: np.ndarray
    relabelled: np.ndarray
    labels: np.ndarray
    validation_rows: np.ndarray
    metric: np.ndarray


@dataclass(frozen=True)
class FolderLabels:
    """What a folder says of a dataset's cells, for every format: soft values laid over the targets
    (``overrides``) and, from a format that ``brings_targets``, the whole target set its rules make."""

    overrides: LabelSet = field(default_factory=dict)
    targets: TargetSet | None = None


@dataclass(frozen=True)
class SourceSummary:
    """One label file: its class, name, entries and distinct cells by soft value."""

    class_index: int
    source: str
    entries: int
    soft: Counter
    """soft value → distinct cells (a later line wins); empty for a file of image ids."""
    resolved: tuple[int, int] | None = None
    """(ids that name cells of the dataset, distinct ids), when a dataset was given."""

    def line(self) -> str:
        soft = ", ".join(f"{value:g}: {count}" for value, count in sorted(self.soft.items()))
        text = f"class {self.class_index:2d}  {self.source:26s} {self.entries:8d} entries"
        if soft:
            text += f"  {sum(self.soft.values()):8d} cells ({soft})"
        else:  # no soft values: a file of image ids, or one with nothing in it
            text += "  (image ids)" if self.entries else "  (empty)"
        if self.resolved is not None:
            text += f"  {self.resolved[0]} of {self.resolved[1]} in the dataset"
        return text


class LabelFormat(Protocol):
    name: str
    description: str
    layout: str
    brings_targets: bool
    """Whether ``read`` gives a whole :class:`TargetSet` (a run takes one such folder at most)."""

    def detect(self, folder: Path) -> bool: ...

    def made_on(self, folder: Path) -> Provenance | None: ...

    def files(self, folder: Path) -> Iterator[tuple[Path, str]]: ...

    def sources(self, folder: Path) -> list[SourceSummary]: ...

    def resolved(self, folder: Path, cells: DatasetCells) -> dict[str, tuple[int, int]]: ...

    def read(self, folder: Path, cells: DatasetCells, scores: ScoreMap) -> FolderLabels: ...


class SpecFolder:
    """SPEC label folders: ``{class}.txt``, lines ``CELL_ID SCORE`` mapped by a score map (manual
    relabels, the label tool's output, pseudo-labels)."""

    name = "spec"
    description = "SPEC label files ({class}.txt)"
    layout = "a folder of {class}.txt files"
    brings_targets = False

    def detect(self, folder: Path) -> bool:
        return folder.is_dir()

    def made_on(self, folder: Path) -> Provenance | None:
        return read_provenance(folder)

    def files(self, folder: Path) -> Iterator[tuple[Path, str]]:
        for path in sorted(folder.glob("*.txt")):
            yield path, path.name

    def sources(self, folder: Path) -> list[SourceSummary]:
        return [SourceSummary(class_index, f"{class_index}.txt", len(read_label_lines(folder / f"{class_index}.txt")),
                              Counter(cells.values()))
                for class_index, cells in read_label_folder(folder, ScoreMap()).items()]

    def resolved(self, folder: Path, cells: DatasetCells) -> dict[str, tuple[int, int]]:
        known = set(cells.cell_ids)
        found = {}
        for path, name in self.files(folder):
            ids = {cell_id for cell_id, _, _ in read_label_lines(path)}
            found[name] = (len(ids & known), len(ids))
        return found

    def read(self, folder: Path, cells: DatasetCells, scores: ScoreMap) -> FolderLabels:
        return FolderLabels(overrides=read_label_folder(folder, scores))


class FourthPlaceFolder:
    """The 4th place's published folder (``relabel/``, ``validation/``, ``auto-relabel*/``) read
    with their rules (:mod:`hpasc.labels.fourth_place`); its ids name cells of HPA's masks unless
    its record says otherwise (``hpasc-labels remap`` writes one)."""

    name = "4th-place"
    description = "the 4th place's layout and rules"
    layout = "theirs (relabel/, validation/, auto-relabel*/, no {class}.txt of its own)"
    brings_targets = True

    def detect(self, folder: Path) -> bool:
        return is_fourth_place_folder(folder)

    def made_on(self, folder: Path) -> Provenance | None:
        return read_provenance(folder) or HPA_PUBLISHED

    def files(self, folder: Path) -> Iterator[tuple[Path, str]]:
        for name in FOLDERS:
            for path in sorted((folder / name).glob("*")) if (folder / name).is_dir() else []:
                yield path, f"{name}/{path.name}"

    def sources(self, folder: Path) -> list[SourceSummary]:
        labels = read_fourth_place(folder)
        found = []
        for kind, files in (("relabel", labels.relabel), ("validation", labels.validation)):
            for class_index, entries in files.items():
                image_ids = kind == "relabel" and class_index == ANTIBODY_CLASS
                mapping = score_map(kind, class_index)
                soft = Counter() if image_ids else Counter(mapping[s] for s in dict(entries).values())
                found.append(SourceSummary(class_index, f"{kind}/{class_index}.txt", len(entries), soft))
        for kind, sets, value in (("auto-positive-relabel", labels.positives, POSITIVE),
                                  ("auto-relabel", labels.negatives, NEGATIVE),
                                  ("auto-relabel2", labels.late_negatives, NEGATIVE)):
            found += [SourceSummary(class_index, f"{kind}/{class_index}.p", len(ids), Counter({value: len(ids)}))
                      for class_index, ids in sets.items()]
        return found

    def resolved(self, folder: Path, cells: DatasetCells) -> dict[str, tuple[int, int]]:
        return self._apply(folder, cells).resolved

    def read(self, folder: Path, cells: DatasetCells, scores: ScoreMap) -> FolderLabels:
        result = self._apply(folder, cells)
        found = sum(f for f, _ in result.resolved.values())
        total = sum(t for _, t in result.resolved.values())
        log.info("the 4th place's labels (%s): %d of %d ids name cells of this dataset; %d validation cells",
                 folder, found, total, result.validation_rows.size)
        return FolderLabels(targets=TargetSet(result.targets(), result.relabelled, result.labels,
                                              result.validation_rows, result.metric))

    @staticmethod
    def _apply(folder: Path, cells: DatasetCells) -> TheirTargets:
        return apply_their_rules(read_fourth_place(folder), cells.cell_ids, cells.image_ids, cells.image_labels,
                                 cells.antibody_of)


SPEC, FOURTH_PLACE = SpecFolder(), FourthPlaceFolder()
FORMATS: dict[str, LabelFormat] = {f.name: f for f in (FOURTH_PLACE, SPEC)}
"""By name, in the order ``auto`` tries them (SPEC, which takes any folder, last)."""
CHOICES = ("auto", *FORMATS)


def label_format(folder: Path, name: str = "auto") -> LabelFormat:
    """The format of ``folder``: the first of :data:`FORMATS` that detects it (``auto``), else the
    named one, which must detect it (one-line InputError otherwise)."""
    if not folder.is_dir():
        raise InputError(f"label folder {folder} does not exist")
    if name == "auto":
        return next(f for f in FORMATS.values() if f.detect(folder))
    chosen = FORMATS[name]
    if not chosen.detect(folder):
        raise InputError(f"--label-format {name}: {folder} is not laid out as {chosen.layout}")
    return chosen
