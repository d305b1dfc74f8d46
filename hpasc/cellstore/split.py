"""The split format, ``DATASET/split/``: its one reader (:func:`read_split`, which training uses) and
its one writer (:func:`write_split`, which hpasc-split's stage calls with the folds it assigned).

- ``split.csv``: ``image_id,fold,source`` for every image; ``source`` is the folder of the image's
  dataset relative to ``DATASET`` (``.`` for the dataset itself, e.g. ``../publichpa_cells``);
  fold ``-1`` (``TRAIN_ONLY``) for images of extra datasets.
- ``split.json``: the settings (folds, validation fold, seed), the sources with a SHA-256 of their
  ``cells.csv``, counts, and the SHA-256 of ``split.csv`` (so an interrupted write of the two files
  is detected instead of silently mixing two splits).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hpasc.cellstore.layout import TABLE
from hpasc.core import atomic
from hpasc.core.errors import InputError

log = logging.getLogger(__name__)

SPLIT_FOLDER = "split"
SPLIT_CSV = "split.csv"
SPLIT_JSON = "split.json"
SPLIT_FORMAT = 1
TRAIN_ONLY = -1
"""The fold of extra-dataset images: always in training, never in validation."""
SELF = "."
"""The ``source`` of the dataset's own images."""


def cells_table_path(dataset: str | os.PathLike) -> Path:
    return Path(dataset) / TABLE


def split_folder(dataset: str | os.PathLike) -> Path:
    return Path(dataset) / SPLIT_FOLDER


@dataclass(frozen=True)
class Split:
    """A dataset's split as training uses it (see :func:`read_split`)."""

    dataset: Path
    """The dataset folder (holding ``cells.csv`` and ``split/``)."""
    folds: int
    fold: int
    """The validation fold."""
    seed: int
    image_folds: Mapping[str, int]
    """Every image's fold; ``TRAIN_ONLY`` (-1) for extra-dataset images."""
    image_sources: Mapping[str, str]
    """Every image's source: its dataset folder relative to ``dataset`` (``.`` for its own)."""

    @property
    def train_images(self) -> list[str]:
        """Sorted ids of the images to train on: other folds and all extra images."""
        return sorted(i for i, f in self.image_folds.items() if f != self.fold)

    @property
    def validation_images(self) -> list[str]:
        """Sorted ids of the validation fold's images (the dataset's own images only)."""
        return self.fold_images(self.fold)

    def fold_images(self, fold: int) -> list[str]:
        return sorted(i for i, f in self.image_folds.items() if f == fold)

    @property
    def sources(self) -> dict[str, Path]:
        """Each source name and its dataset folder."""
        return {s: self.dataset / s for s in sorted(set(self.image_sources.values()))}


def read_split(dataset: str | os.PathLike, *, check_current: bool = True) -> Split:
    """Read ``DATASET/split/`` as :func:`write_split` wrote it.

    With ``check_current`` every source's ``cells.csv`` must be unchanged since the split was
    made, so that training never silently skips images cut later. Raises InputError for a missing,
    inconsistent (interrupted write) or outdated split.
    """
    dataset = Path(dataset)
    folder = split_folder(dataset)
    csv_path, json_path = folder / SPLIT_CSV, folder / SPLIT_JSON
    rerun = f"split it again with hpasc-split -i {dataset}"
    if not cells_table_path(dataset).is_file():  # an image folder, say: the split would not be the fix
        raise InputError(f"{dataset}: not a cell dataset (no {cells_table_path(dataset).name}): cut one with "
                         f"hpasc-cut -i IMAGES -m MASKS -o DATASET, then split it with hpasc-split -i DATASET")
    if not json_path.is_file() or not csv_path.is_file():
        raise InputError(f"{folder}: no split ({SPLIT_JSON} and {SPLIT_CSV}): {rerun}")
    try:
        info = json.loads(json_path.read_text())
        folds, fold, seed = int(info["folds"]), int(info["fold"]), int(info["seed"])
        fmt, csv_digest, sources = info["format"], info["split_csv_sha256"], info["sources"]
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{json_path}: not a split description ({exc}): {rerun}") from None
    if fmt != SPLIT_FORMAT:
        raise InputError(f"{json_path}: split format {fmt}, expected {SPLIT_FORMAT}: {rerun}")
    csv_bytes = csv_path.read_bytes()
    if hashlib.sha256(csv_bytes).hexdigest() != csv_digest:
        raise InputError(f"{csv_path} does not match {SPLIT_JSON} (interrupted write?): {rerun}")
    if check_current:
        for source in sources:
            table = cells_table_path(dataset / source["source"])
            if not table.is_file() or hashlib.sha256(table.read_bytes()).hexdigest() \
                    != source["cells_sha256"]:
                raise InputError(f"{table} is missing or changed since the split was made: {rerun}")
    table = pd.read_csv(io.BytesIO(csv_bytes), dtype={"image_id": str, "fold": int, "source": str},
                        keep_default_na=False)
    return Split(dataset=dataset, folds=folds, fold=fold, seed=seed,
                 image_folds=dict(zip(table["image_id"], table["fold"].tolist())),
                 image_sources=dict(zip(table["image_id"], table["source"])))


def write_split(dataset: str | os.PathLike, csv_text: str, json_text: str) -> bool:
    """Write ``DATASET/split/`` (``split.csv`` first, each atomically); False when both files already
    hold these bytes (nothing is rewritten), and a log line saying what changed when they differ."""
    folder = split_folder(dataset)
    csv_path, json_path = folder / SPLIT_CSV, folder / SPLIT_JSON
    old_json = json_path.read_text() if json_path.is_file() else None
    old_csv = csv_path.read_text() if csv_path.is_file() else None
    if (old_csv, old_json) == (csv_text, json_text):
        log.info("%s: split unchanged", folder)
        return False
    if old_json is not None:
        log.info("%s: replacing the existing split (%s)", folder, _what_changed(old_json, json_text))
    atomic.write_text(csv_path, csv_text)
    atomic.write_text(json_path, json_text)
    return True


def _what_changed(old_text: str, new_text: str) -> str:
    try:
        old = json.loads(old_text)
        new = json.loads(new_text)
        changes = [f"{key} {old.get(key)} -> {new[key]}" for key in ("folds", "fold", "seed")
                   if old.get(key) != new[key]]
        old_sources = [s["source"] for s in old.get("sources", [])]
        if old_sources != [s["source"] for s in new["sources"]]:
            changes.append(f"sources {old_sources} -> {[s['source'] for s in new['sources']]}")
        elif old.get("sources") != new["sources"]:
            changes.append("a cells.csv changed")
    except (ValueError, TypeError, KeyError, AttributeError):
        return "it was unreadable"
    return ", ".join(changes) or "same settings, other content"
