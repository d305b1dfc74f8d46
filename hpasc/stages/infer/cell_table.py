"""The per-cell table (``infer.py --cells-out``): one row per cell with where it is, its quality
factors, the ensemble's raw probabilities and the post-processed confidences the submission
holds, and its top class; with ``--embeddings``, each member's pooled feature vectors beside it.

Columns: ``image_id, cell_id ({ID}_{k}), mask_id, y0, x0, y1, x1`` (the bounding box, end
exclusive), ``area`` (pixels), ``centroid_y, centroid_x``, ``border, outlier`` (the 4th place's
factors), ``prob_00 .. prob_18`` (raw ensemble probabilities), ``conf_00 .. conf_18`` (after the
cell/image weighting and factors: the submission's numbers), ``top_class`` (the index of the highest
confidence) and the three best calls, ``top1_class, top1_conf, .. top3_conf`` (class names; Negative
only where it is the call: :func:`top_calls`). Parquet or CSV by the file's extension, written
atomically. Embeddings: ``{stem}.embeddings-{j}.npy`` per member j, float16 (cells × width), row i
for the table's row i; ``{stem}.embeddings.json`` names each file's checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.core import atomic
from hpasc.core.classes import CLASS_NAMES, NEGATIVE, NUM_CLASSES
from hpasc.core.errors import InputError
from hpasc.stages.infer.h5ad import read_h5ad, table_of, write_h5ad

DESCRIPTORS = ("image_id", "cell_id", "mask_id", "y0", "x0", "y1", "x1", "area", "centroid_y", "centroid_x",
               "border", "outlier")
PROBABILITIES = tuple(f"prob_{k:02d}" for k in range(NUM_CLASSES))
CONFIDENCES = tuple(f"conf_{k:02d}" for k in range(NUM_CLASSES))
SCORES = (list(PROBABILITIES), list(CONFIDENCES))
FORMATS = (".parquet", ".csv", ".h5ad")


def check_table_path(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: a cell table is {' or '.join(FORMATS)}")


def image_rows(cells: pd.DataFrame, probabilities: np.ndarray, confidences: np.ndarray) -> pd.DataFrame:
    """The table's rows of one image: its cells' descriptors with their scores."""
    rows = cells.loc[:, list(DESCRIPTORS)].reset_index(drop=True)
    # The confidences keep their float64: the submission prints these very numbers.
    confidences = np.asarray(confidences, np.float64).reshape(-1, NUM_CLASSES)
    scores = pd.concat([pd.DataFrame(probabilities.astype(np.float32), columns=list(PROBABILITIES)),
                        pd.DataFrame(confidences, columns=list(CONFIDENCES))], axis=1)
    return pd.concat([rows, scores, pd.DataFrame({"top_class": confidences.argmax(axis=1)}),
                      top_calls(confidences)], axis=1)


TOP_CALLS = 3


def top_calls(confidences: np.ndarray, count: int = TOP_CALLS) -> pd.DataFrame:
    """Each cell's ``count`` best classes by confidence (``top1_class, top1_conf, ...``): Negative
    is among them only where it is the call (first), since it says that the others are absent."""
    order = np.argsort(-np.asarray(confidences, np.float64), axis=1, kind="stable")
    keep = order != NEGATIVE
    keep[:, 0] = True
    # The kept classes first, in their order: each row's Negative moves to the end unless it leads.
    ranked = np.take_along_axis(order, np.argsort(~keep, axis=1, kind="stable"), axis=1)[:, :count]
    columns = {}
    for rank in range(count):
        classes = ranked[:, rank]
        columns[f"top{rank + 1}_class"] = [CLASS_NAMES[k] for k in classes]
        columns[f"top{rank + 1}_conf"] = np.asarray(confidences, np.float64)[np.arange(len(classes)), classes]
    return pd.DataFrame(columns)


def embedding_path(table: Path, member: int) -> Path:
    return table.with_name(f"{table.stem}.embeddings-{member}.npy")


@dataclass
class CellTable:
    """Collects the rows (and embeddings) of every image, in the order they are added."""

    members: list[str] = field(default_factory=list)
    """The checkpoints whose embeddings are kept (empty: none)."""
    provenance: dict[str, object] = field(default_factory=dict)
    """What made the cells and scores (an ``.h5ad`` file keeps it)."""
    parts: list[pd.DataFrame] = field(default_factory=list)
    embeddings: list[list[np.ndarray]] = field(default_factory=list)

    def add(self, rows: pd.DataFrame, embeddings: list[np.ndarray] | None = None) -> None:
        self.parts.append(rows)
        if self.members:
            if embeddings is None or len(embeddings) != len(self.members):
                raise ValueError(f"need embeddings of {len(self.members)} members")
            self.embeddings.append(embeddings)

    def write(self, path: Path) -> list[Path]:
        """Write the table (and the embeddings) atomically; returns the files written."""
        check_table_path(path)
        table = pd.concat(self.parts, ignore_index=True) if self.parts else _empty()
        written = [path]
        if path.suffix.lower() == ".h5ad":  # the embeddings inside
            write_h5ad(path, table, SCORES, [self._vectors(j) for j in range(len(self.members))], self.members,
                       self.provenance)
            return written
        if path.suffix.lower() == ".csv":
            atomic.write_text(path, table.to_csv(index=False, lineterminator="\n"))
        else:
            with atomic.atomic_path(path) as tmp:
                table.to_parquet(tmp, index=False)
        for j in range(len(self.members)):
            with atomic.atomic_path(embedding_path(path, j)) as tmp, open(tmp, "wb") as handle:
                np.save(handle, self._vectors(j))
            written.append(embedding_path(path, j))
        if self.members:
            index = path.with_name(f"{path.stem}.embeddings.json")
            atomic.write_text(index, json.dumps({embedding_path(path, j).name: name
                                                 for j, name in enumerate(self.members)}, indent=1) + "\n")
            written.append(index)
        return written


    def _vectors(self, member: int) -> np.ndarray:
        parts = [e[member] for e in self.embeddings]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)


def _empty() -> pd.DataFrame:
    return image_rows(pd.DataFrame(columns=list(DESCRIPTORS)), np.zeros((0, NUM_CLASSES)), np.zeros((0, NUM_CLASSES)))


def read_cell_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :class:`CellTable` (InputError for a missing or foreign file)."""
    path = Path(path)
    check_table_path(path)
    if not path.is_file():
        raise InputError(f"cell table {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".h5ad":
            table = _in_order(table_of(read_h5ad(path), SCORES, path))
        else:
            table = (pd.read_csv(path, dtype={"image_id": str, "cell_id": str}, keep_default_na=False)
                     if suffix == ".csv" else pd.read_parquet(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable cell table ({exc})") from None
    missing = [c for c in (*DESCRIPTORS, *CONFIDENCES) if c not in table.columns]
    if missing:
        raise InputError(f"{path}: not a cell table of hpasc-infer (missing {', '.join(missing[:3])})")
    return table


def _in_order(table: pd.DataFrame) -> pd.DataFrame:
    """The columns in the order :class:`CellTable` writes them."""
    first = [*DESCRIPTORS, *PROBABILITIES, *CONFIDENCES]
    return table[[c for c in first if c in table.columns] + [c for c in table.columns if c not in first]]


def read_embeddings(path: str | os.PathLike) -> np.ndarray | None:
    """The cells' embedding beside or inside a cell table, row i for its row i: the mean over the
    ensemble's members (an ``.h5ad`` file's ``X``; the ``.npy`` files' mean beside a Parquet or CSV
    table), or None when there is none (infer.py ran without ``--embeddings``, or the members'
    widths differ)."""
    path = Path(path)
    if path.suffix.lower() == ".h5ad":
        matrix = read_h5ad(path).X
        return None if matrix is None else np.asarray(matrix, np.float32)
    members = []
    while embedding_path(path, len(members)).is_file():
        members.append(np.load(embedding_path(path, len(members))))
    if not members or len({m.shape for m in members}) > 1:
        return None
    return np.mean([m.astype(np.float32) for m in members], axis=0)
