"""The per-cell table (``infer.py --cells-out``): one row per cell with where it is, its quality
factors, the ensemble's raw probabilities and the post-processed confidences the submission
holds, and its top class; with ``--embeddings``, each member's pooled feature vectors beside it.

Columns: ``image_id, cell_id ({ID}_{k}), mask_id, y0, x0, y1, x1`` (the bounding box, end
exclusive), ``area`` (pixels), ``centroid_y, centroid_x``, ``border, outlier`` (the 4th place's
factors), ``prob_00 .. prob_18`` (raw ensemble probabilities), ``conf_00 .. conf_18`` (after the
cell/image weighting and factors: the submission's numbers), ``top_class, top_class_name,
top_confidence`` (the highest confidence). Parquet or CSV by the file's extension, written
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
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES
from hpasc.core.errors import InputError

DESCRIPTORS = ("image_id", "cell_id", "mask_id", "y0", "x0", "y1", "x1", "area", "centroid_y", "centroid_x",
               "border", "outlier")
PROBABILITIES = tuple(f"prob_{k:02d}" for k in range(NUM_CLASSES))
CONFIDENCES = tuple(f"conf_{k:02d}" for k in range(NUM_CLASSES))
FORMATS = (".parquet", ".csv")


def check_table_path(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: a cell table is {' or '.join(FORMATS)}")


def image_rows(cells: pd.DataFrame, probabilities: np.ndarray, confidences: np.ndarray) -> pd.DataFrame:
    """The table's rows of one image: its cells' descriptors with their scores."""
    rows = cells.loc[:, list(DESCRIPTORS)].reset_index(drop=True)
    # The confidences keep their float64: the submission prints these very numbers.
    scores = pd.concat([pd.DataFrame(probabilities.astype(np.float32), columns=list(PROBABILITIES)),
                        pd.DataFrame(np.asarray(confidences, np.float64), columns=list(CONFIDENCES))], axis=1)
    top = confidences.argmax(axis=1) if len(confidences) else np.zeros(0, np.int64)
    return pd.concat([rows, scores], axis=1).assign(
        top_class=top, top_class_name=[CLASS_NAMES[k] for k in top],
        top_confidence=np.asarray(confidences, np.float64)[np.arange(len(top)), top])


def embedding_path(table: Path, member: int) -> Path:
    return table.with_name(f"{table.stem}.embeddings-{member}.npy")


@dataclass
class CellTable:
    """Collects the rows (and embeddings) of every image, in the order they are added."""

    members: list[str] = field(default_factory=list)
    """The checkpoints whose embeddings are kept (empty: none)."""
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
        if path.suffix.lower() == ".csv":
            atomic.write_text(path, table.to_csv(index=False, lineterminator="\n"))
        else:
            with atomic.atomic_path(path) as tmp:
                table.to_parquet(tmp, index=False)
        for j, name in enumerate(self.members):
            parts = [e[j] for e in self.embeddings]
            vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)
            with atomic.atomic_path(embedding_path(path, j)) as tmp, open(tmp, "wb") as handle:
                np.save(handle, vectors)
            written.append(embedding_path(path, j))
        if self.members:
            index = path.with_name(f"{path.stem}.embeddings.json")
            atomic.write_text(index, json.dumps({embedding_path(path, j).name: name
                                                 for j, name in enumerate(self.members)}, indent=1) + "\n")
            written.append(index)
        return written


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=[*DESCRIPTORS, *PROBABILITIES, *CONFIDENCES, "top_class", "top_class_name",
                                 "top_confidence"])


def read_cell_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :class:`CellTable` (InputError for a missing or foreign file)."""
    path = Path(path)
    check_table_path(path)
    if not path.is_file():
        raise InputError(f"cell table {path} does not exist")
    try:
        table = (pd.read_csv(path, dtype={"image_id": str, "cell_id": str}, keep_default_na=False)
                 if path.suffix.lower() == ".csv" else pd.read_parquet(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable cell table ({exc})") from None
    missing = [c for c in (*DESCRIPTORS, *CONFIDENCES) if c not in table.columns]
    if missing:
        raise InputError(f"{path}: not a cell table of infer.py (missing {', '.join(missing[:3])})")
    return table
