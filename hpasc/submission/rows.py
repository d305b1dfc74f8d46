"""Rows of ``submission.csv``: ``ID,ImageWidth,ImageHeight,PredictionString``.

A PredictionString is space-separated triplets ``{class} {confidence} {mask}``: every cell of the
image once per class (cell by cell, classes 0..18 within a cell), ``mask`` being the cell's
:mod:`hpasc.submission.rle` string. Confidences are written with 6 significant digits (``%.6g``: ``1``,
``0.25``, ``3.1e-05``), enough to keep any ranking a float32 model output implies. An image without
cells has an empty PredictionString.

With a sample submission the rows follow its ID order, and the two must hold the same IDs: a
missing or an extra image is a mistake to report, not to paper over.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.core import atomic
from hpasc.core.classes import NUM_CLASSES
from hpasc.core.errors import InputError

COLUMNS: tuple[str, ...] = ("ID", "ImageWidth", "ImageHeight", "PredictionString")
SubmissionRow = tuple[str, int, int, str]


def prediction_string(masks: Sequence[str], scores: np.ndarray) -> str:
    """The PredictionString of an image's cells: ``masks`` (one string per cell) with ``scores``
    (n_cells × 19 confidences); "" for no cells."""
    if not len(masks):
        return ""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(masks), NUM_CLASSES):
        raise ValueError(f"need {len(masks)} x {NUM_CLASSES} scores, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return " ".join(f"{klass} {score:.6g} {mask}"
                    for mask, row in zip(masks, scores) for klass, score in enumerate(row))


def parse_prediction_string(text: str) -> list[tuple[int, float, str]]:
    """The (class, confidence, mask) triplets of a PredictionString; ValueError when malformed."""
    tokens = text.split()
    if len(tokens) % 3:
        raise ValueError(f"{len(tokens)} fields, not a multiple of 3 (class confidence mask)")
    triplets = []
    for start in range(0, len(tokens), 3):
        klass, confidence, mask = tokens[start:start + 3]
        triplet = start // 3 + 1
        if not klass.isdigit() or int(klass) >= NUM_CLASSES:
            raise ValueError(f"triplet {triplet}: class {klass!r} is not one of 0..{NUM_CLASSES - 1}")
        try:
            value = float(confidence)
        except ValueError:
            raise ValueError(f"triplet {triplet}: confidence {confidence!r} is not a number") from None
        triplets.append((int(klass), value, mask))
    return triplets


def write_submission(path: str | os.PathLike, rows: Iterable[SubmissionRow],
                     order: Sequence[str] | None = None) -> None:
    """Write the rows (ID, width, height, PredictionString) atomically, in ``order`` when given
    (the IDs of a sample submission, which the rows must match exactly: InputError otherwise)."""
    by_id: dict[str, SubmissionRow] = {}
    for row in rows:
        if row[0] in by_id:
            raise InputError(f"{path}: two rows for image {row[0]}")
        by_id[row[0]] = row
    if order is not None:
        wanted = set(order)
        extra = [i for i in by_id if i not in wanted]
        if extra:
            raise InputError(f"{path}: image {extra[0]} is not in the sample submission "
                             f"({len(extra)} such image(s))")
        missing = [i for i in order if i not in by_id]
        if missing:
            raise InputError(f"{path}: no prediction for image {missing[0]} of the sample submission "
                             f"({len(missing)} such image(s))")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(by_id[i] for i in (by_id if order is None else order))
    atomic.write_text(path, out.getvalue())


@dataclass(frozen=True)
class SampleSubmission:
    """A sample submission's image IDs in its order, and each image's (width, height) where it
    gives them (ImageWidth and ImageHeight columns)."""

    order: list[str]
    sizes: dict[str, tuple[int, int]]


def read_sample_submission(path: str | os.PathLike) -> SampleSubmission:
    """The image IDs of a sample submission, in its order, with the image sizes it gives."""
    table = _read_csv(path)
    if "ID" not in table.columns:
        raise InputError(f"{path}: no ID column (columns: {', '.join(table.columns)})")
    duplicated = table["ID"].duplicated()
    if duplicated.any():
        line = int(np.flatnonzero(duplicated)[0]) + 2
        raise InputError(f"{path} line {line}: image {table['ID'].iloc[line - 2]} appears twice")
    sizes = {}
    if {"ImageWidth", "ImageHeight"} <= set(table.columns):
        widths, heights = _integers(table, "ImageWidth", path), _integers(table, "ImageHeight", path)
        sizes = {i: (int(w), int(h)) for i, w, h in zip(table["ID"], widths, heights)}
    return SampleSubmission(table["ID"].tolist(), sizes)


def _integers(table: pd.DataFrame, column: str, path: str | os.PathLike) -> pd.Series:
    """``column`` as int64; InputError naming the first line that is not an integer."""
    numbers = pd.to_numeric(table[column], errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise InputError(f"{path} line {line}: {column} {table[column].iloc[line - 2]!r} is not an integer")
    return numbers.astype(np.int64)


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """A submission as a table of the four columns (and any others it has): ID and
    PredictionString as str (an empty PredictionString is ""), ImageWidth and ImageHeight as int."""
    table = _read_csv(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in ("ImageWidth", "ImageHeight"):
        table[column] = _integers(table, column, path)
    return table


def _read_csv(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None

