"""What a label folder holds (``hpasc-labels inspect``): per class and source, the
entries, the distinct cells by soft value and, with a dataset, how many ids name its cells."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from hpasc.cells.provenance import Provenance, read_provenance, same_cell_ids
from hpasc.cellstore import open_cells
from hpasc.core.classes import label_matrix, parse_labels
from hpasc.labels.formats import DatasetCells, label_format


def _dataset_cells(table: pd.DataFrame, antibody_of: Mapping[str, str] | None) -> DatasetCells:
    labels = label_matrix(parse_labels(text) for text in table["labels"].fillna(""))
    return DatasetCells(table["cell_id"].tolist(), table["image_id"].tolist(), labels, antibody_of)


def inspect_labels(folder: str | os.PathLike, dataset: str | os.PathLike | None = None,
                   antibody_of: Mapping[str, str] | None = None) -> list[str]:
    """The report's lines; the last is ``labels: N entries, M classes``."""
    folder = Path(folder)
    found = label_format(folder)
    sources = found.sources(folder)
    lines = [f"{folder}: {found.description}"]
    if dataset is not None:
        store = open_cells(dataset)
        cells = _dataset_cells(store.table, antibody_of)
        resolved = found.resolved(folder, cells)
        sources = [dataclasses.replace(s, resolved=resolved.get(s.source, resolved.get(f"{s.source} (images)")))
                   for s in sources]
        hits = sum(r[0] for r in resolved.values())
        total = sum(r[1] for r in resolved.values())
        lines.append(f"dataset {dataset}: {len(cells.cell_ids)} cells; {hits} of {total} distinct ids name them")
        lines += _caution(found.made_on(folder), read_provenance(store.root))
    lines += [s.line() for s in sorted(sources, key=lambda s: (s.class_index, s.source))]
    lines.append(f"labels: {sum(s.entries for s in sources)} entries, {len({s.class_index for s in sources})} classes")
    return lines


def _caution(made_on: Provenance | None, used_on: Provenance | None) -> list[str]:
    """A line when the matching ids may name other cells than those they were made on."""
    if made_on is None or used_on is None:
        unrecorded = "the label folder" if made_on is None else "the dataset"
        return [f"unchecked: {unrecorded} has no segmentation record (segmentation.json): ids are matched by "
                "name, and name other cells if they were made on other masks"]
    if same_cell_ids(made_on, used_on):
        return []
    return [f"caution: the ids were made on {made_on.describe()}, the dataset was cut from {used_on.describe()}: "
            "there they name other cells (hpasc-labels remap carries them over)"]
