"""The 19 competition classes and the ``8|5|0`` label-string format."""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.core.errors import InputError

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)
NUM_CLASSES = len(CLASS_NAMES)
NEGATIVE = 18
MITOTIC_SPINDLE = 11


def is_class_index(value: object) -> bool:
    """Whether ``value`` is an int (not a bool) naming one of the 19 classes, 0..18."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < NUM_CLASSES


def parse_labels(text: object) -> list[int]:
    """Parse ``"8|5|0"`` into ``[8, 5, 0]``; empty or NaN gives ``[]``.

    Raises ValueError for a token that is not a class index in 0..18.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    labels = []
    for token in str(text).split("|"):
        token = token.strip()
        if not token:
            continue
        value = int(token)
        if not is_class_index(value):
            raise ValueError(f"class index {value} outside 0..{NUM_CLASSES - 1}")
        labels.append(value)
    return labels


def label_matrix(labels: Iterable[Sequence[int]]) -> np.ndarray:
    """The bool (rows, 19) multi-hot matrix of per-row class lists (a repeated class counts once);
    ValueError for a class index outside 0..18."""
    rows = list(labels)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and not (0 <= flat.min() and flat.max() < NUM_CLASSES):
        raise ValueError(f"class indices outside 0..{NUM_CLASSES - 1}")
    matrix = np.zeros((len(rows), NUM_CLASSES), dtype=bool)
    matrix[np.repeat(np.arange(len(rows)), lengths), flat] = True
    return matrix


def format_labels(labels: list[int] | tuple[int, ...]) -> str:
    """Format class indices as the ``|``-joined string of train.csv, keeping their order."""
    return "|".join(str(int(c)) for c in labels)


def read_label_table(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read a train.csv-style table (``ID,Label``) into ``{ID: [classes]}``.

    Raises InputError naming the file for a missing file, missing columns, a bad label, an empty
    ID or an ID listed twice with different labels; warns about repeated rows and rows without
    a label (their images get none).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels CSV {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in ("ID", "Label") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    labels: dict[str, list[int]] = {}
    lines: dict[str, int] = {}
    repeated, unlabelled = [], []
    for row, (image_id, text) in enumerate(zip(table["ID"], table["Label"]), start=2):
        if not image_id.strip():
            raise InputError(f"{path} line {row}: empty ID")
        try:
            parsed = parse_labels(text)
        except ValueError as exc:
            raise InputError(f"{path} line {row}: bad label {text!r} ({exc})") from None
        if image_id in labels:
            if set(labels[image_id]) != set(parsed):  # "0|1" and "1|0" are the same labels
                raise InputError(f"{path} line {row}: {image_id} is listed on line {lines[image_id]} "
                                 "with other labels")
            repeated.append(image_id)
        labels[image_id], lines[image_id] = parsed, row
        if not text.strip():
            unlabelled.append(image_id)
    _warn_rows(path, repeated, "are repeated (same labels, read once)")
    _warn_rows(path, unlabelled, "have no Label (their cells get no labels)")
    return labels


def _warn_rows(path: Path, ids: list[str], what: str) -> None:
    if ids:
        log.warning("%s: %d rows %s, e.g. %s", path, len(ids), what, ids[0])
