"""What a label folder holds (``python -m hpasc.labels inspect``): per class and source, the
entries, the distinct cells by soft value and, with a dataset, how many ids name its cells."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc.cellstore import open_cells
from hpasc.classes import label_matrix, parse_labels
from hpasc.errors import InputError
from hpasc.labels.files import read_label_lines
from hpasc.labels.folders import ScoreMap, read_label_folder
from hpasc.labels.fourth_place import (ANTIBODY_CLASS, NEGATIVE, POSITIVE, FourthPlaceFolder, apply_recipe,
                                       is_fourth_place_folder, read_fourth_place, score_map)


@dataclass(frozen=True)
class SourceSummary:
    class_index: int
    source: str
    entries: int
    soft: Counter
    """soft value → distinct cells (a later line wins); empty for relabel/6.txt, which lists images."""
    resolved: tuple[int, int] | None = None
    """(ids that name cells of the dataset, distinct ids), when a dataset was given."""

    def line(self) -> str:
        soft = ", ".join(f"{value:g}: {count}" for value, count in sorted(self.soft.items()))
        text = f"class {self.class_index:2d}  {self.source:26s} {self.entries:8d} entries"
        text += f"  {sum(self.soft.values()):8d} cells ({soft})" if soft else "  (image ids)"
        if self.resolved is not None:
            text += f"  {self.resolved[0]} of {self.resolved[1]} in the dataset"
        return text


def _fourth_place_sources(labels: FourthPlaceFolder) -> Iterable[SourceSummary]:
    for kind, files in (("relabel", labels.relabel), ("validation", labels.validation)):
        for class_index, entries in files.items():
            name = f"{kind}/{class_index}.txt"
            if kind == "relabel" and class_index == ANTIBODY_CLASS:
                yield SourceSummary(class_index, name, len(entries), Counter())
                continue
            latest = dict(entries)
            mapping = score_map(kind, class_index)
            yield SourceSummary(class_index, name, len(entries), Counter(mapping[s] for s in latest.values()))
    for kind, sets, value in (("auto-positive-relabel", labels.positives, POSITIVE),
                              ("auto-relabel", labels.negatives, NEGATIVE),
                              ("auto-relabel2", labels.late_negatives, NEGATIVE)):
        for class_index, ids in sets.items():
            yield SourceSummary(class_index, f"{kind}/{class_index}.p", len(ids), Counter({value: len(ids)}))


def _spec_sources(folder: Path) -> Iterable[SourceSummary]:
    for class_index, cells in read_label_folder(folder, ScoreMap()).items():
        entries = len(read_label_lines(folder / f"{class_index}.txt"))
        yield SourceSummary(class_index, f"{class_index}.txt", entries, Counter(cells.values()))


def _dataset_cells(dataset: Path) -> tuple[list[str], list[str], np.ndarray]:
    table = open_cells(dataset).table
    labels = label_matrix(parse_labels(text) for text in table["labels"].fillna(""))
    return table["cell_id"].tolist(), table["image_id"].tolist(), labels


def inspect_labels(folder: str | os.PathLike, dataset: str | os.PathLike | None = None,
                   antibody_of: Mapping[str, str] | None = None) -> list[str]:
    """The report's lines; the last is ``labels: N entries, M classes``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"label folder {folder} does not exist")
    theirs = is_fourth_place_folder(folder)
    labels = read_fourth_place(folder) if theirs else None
    sources = list(_fourth_place_sources(labels) if labels else _spec_sources(folder))
    lines = [f"{folder}: " + ("the 4th place's layout and rules" if theirs else "SPEC label files ({class}.txt)")]
    if dataset is not None:
        cell_ids, image_ids, image_labels = _dataset_cells(Path(dataset))
        if labels:
            resolved = apply_recipe(labels, cell_ids, image_ids, image_labels, antibody_of).resolved
        else:
            known = set(cell_ids)
            resolved = {s.source: _found(folder / s.source, known) for s in sources}
        sources = [SourceSummary(s.class_index, s.source, s.entries, s.soft,
                                 resolved.get(s.source, resolved.get(f"{s.source} (images)")))
                   for s in sources]
        found = sum(r[0] for r in resolved.values())
        lines.append(f"dataset {dataset}: {len(cell_ids)} cells; {found} of {sum(r[1] for r in resolved.values())} "
                     "distinct ids name them")
    lines += [s.line() for s in sorted(sources, key=lambda s: (s.class_index, s.source))]
    entries = labels.entries() if labels else sum(s.entries for s in sources)
    lines.append(f"labels: {entries} entries, {len({s.class_index for s in sources})} classes")
    return lines


def _found(path: Path, known: set[str]) -> tuple[int, int]:
    ids = {cell_id for cell_id, _, _ in read_label_lines(path)}
    return len(ids & known), len(ids)
