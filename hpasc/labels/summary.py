"""What a label folder holds (``hpasc-labels inspect``): per class and source, the
entries, the distinct cells by soft value and, with a dataset, how many ids name its cells."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from hpasc.cellstore import open_cells
from hpasc.core.classes import label_matrix, parse_labels
from hpasc.labels.formats import DatasetCells, label_format


def _dataset_cells(dataset: Path, antibody_of: Mapping[str, str] | None) -> DatasetCells:
    table = open_cells(dataset).table
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
        cells = _dataset_cells(Path(dataset), antibody_of)
        resolved = found.resolved(folder, cells)
        sources = [dataclasses.replace(s, resolved=resolved.get(s.source, resolved.get(f"{s.source} (images)")))
                   for s in sources]
        hits = sum(r[0] for r in resolved.values())
        total = sum(r[1] for r in resolved.values())
        lines.append(f"dataset {dataset}: {len(cells.cell_ids)} cells; {hits} of {total} distinct ids name them")
    lines += [s.line() for s in sorted(sources, key=lambda s: (s.class_index, s.source))]
    lines.append(f"labels: {sum(s.entries for s in sources)} entries, {len({s.class_index for s in sources})} classes")
    return lines
