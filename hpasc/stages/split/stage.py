"""Image-level train/validation folds of a cell dataset, and the reader that training uses.

A cell dataset (hpasc-cut's output folder) has ``cells.csv`` with one row per cell and
at least the columns ``image_id``, ``labels`` (the image-level labels of the cell's image, ``8|5|0``,
possibly empty) and ``keep`` (True/False). Only these three columns are read.

:func:`split_dataset` assigns every image that has at least one kept cell to one of ``folds`` folds
with multilabel iterative stratification (``MultilabelStratifiedKFold``, ``shuffle=True``,
``random_state=seed``) on the images' 19-class multi-hot labels, so all cells of an image stay in
one fold. Images are sorted by id first, so the folds depend on the set of images and their labels,
never on the row order of the table. Images of *extra* datasets (e.g. public HPA, cut the same way)
get fold ``-1``: they are always trained on and never validated on, so validation measures the
competition's data only. An extra image whose id is already taken (by the dataset itself or an
earlier extra dataset) is left out with a warning: the first copy wins.

The split lives in ``DATASET/split/`` (its own folder, so that its ``manifest.json`` does not
replace the one of hpasc-cut in ``DATASET/``), in the format of :mod:`hpasc.cellstore.split`, whose
writer rewrites nothing when the result is byte-identical and replaces (and logs) a split made with
other settings or from another table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.cellstore.layout import parse_table, read_text
from hpasc.cellstore.split import SELF, SPLIT_FORMAT, TRAIN_ONLY, cells_table_path, read_split, write_split
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES, parse_labels
from hpasc.core.errors import InputError

log = logging.getLogger(__name__)

_COLUMNS = ("image_id", "labels", "keep")
_KEEP_VALUES = {"true": True, "false": False, "1": True, "0": False}


# --- reading a cell table ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTable:
    """The images of one cell dataset that have kept cells, sorted by id."""

    ids: np.ndarray
    """Image ids (str), sorted."""
    labels: np.ndarray
    """``(images, 19)`` bool multi-hot image labels (the union over the image's rows)."""
    cells: np.ndarray
    """Number of kept cells per image (>= 1)."""
    dropped: int
    """Images in the table without any kept cell (left out of the split)."""
    sha256: str
    """SHA-256 of the ``cells.csv`` it was read from."""


def read_image_table(dataset: str | os.PathLike) -> ImageTable:
    """Read ``DATASET/cells.csv`` into one entry per image with kept cells.

    Raises InputError naming the folder or file for a missing folder/table, a table that is not
    CSV, a missing column, an empty image id, a bad label or a ``keep`` that is not a boolean.
    """
    dataset = Path(dataset)
    path = cells_table_path(dataset)
    if not dataset.is_dir():
        raise InputError(f"dataset folder {dataset} not found: run hpasc-cut first")
    if not path.is_file():
        raise InputError(f"{path} not found: run hpasc-cut first")
    table = parse_table(read_text(path), dict.fromkeys(_COLUMNS, "str"), path, _COLUMNS)
    if table.empty:
        raise InputError(f"{path}: no cells")

    def fail(row: int, what: str) -> InputError:  # row: 0-based data row; line 1 is the header
        return InputError(f"{path} line {row + 2}: {what}")

    ids = table["image_id"].str.strip()
    if (ids == "").any():
        raise fail(int(np.argmax((ids == "").to_numpy())), "empty image_id")
    keep = table["keep"].str.strip().str.lower().map(_KEEP_VALUES)
    if keep.isna().any():
        row = int(np.argmax(keep.isna().to_numpy()))
        raise fail(row, f"keep must be True or False, got {table['keep'].iloc[row]!r}")
    keep = keep.to_numpy(dtype=bool)

    label_codes, label_texts = pd.factorize(table["labels"])
    label_hot = np.zeros((len(label_texts), NUM_CLASSES), dtype=bool)
    for code, text in enumerate(label_texts):
        try:
            label_hot[code, parse_labels(text)] = True
        except ValueError as exc:
            raise fail(int(np.argmax(label_codes == code)), f"bad labels {text!r} ({exc})") from None

    image_codes, image_ids = pd.factorize(ids, sort=True)
    labels = np.zeros((len(image_ids), NUM_CLASSES), dtype=bool)
    pairs = np.unique(image_codes.astype(np.int64) * len(label_texts) + label_codes)
    np.logical_or.at(labels, pairs // len(label_texts), label_hot[pairs % len(label_texts)])
    cells = np.bincount(image_codes, weights=keep, minlength=len(image_ids)).astype(int)
    used = cells > 0
    return ImageTable(ids=np.asarray(image_ids, dtype=object)[used], labels=labels[used],
                      cells=cells[used], dropped=int((~used).sum()),
                      sha256=hashlib.sha256(path.read_bytes()).hexdigest())


# --- the folds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitSettings:
    """How to split: ``folds`` folds, fold ``fold`` is validation, ``seed`` for the stratifier."""

    folds: int = 5
    fold: int = 0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"need at least 2 folds, got {self.folds}")
        if not 0 <= self.fold < self.folds:
            raise ValueError(f"the validation fold must be in 0..{self.folds - 1}, got {self.fold}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"the seed must be in 0..2**32-1, got {self.seed}")


def assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index 0..folds-1 for each row of the ``(n, classes)`` multi-hot ``labels``.

    ``MultilabelStratifiedKFold(folds, shuffle=True, random_state=seed)``: deterministic for a seed
    and a row order (callers sort their rows). Takes about 0.4 s for the 21,806 images of the
    competition's train.csv: its Python loop runs once per image, so it is only slow when run on
    cells (hundreds of thousands of rows) instead of images.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    labels = np.asarray(labels, dtype=bool)
    if len(labels) < folds:
        raise ValueError(f"cannot make {folds} folds of {len(labels)} images")
    stratifier = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.full(len(labels), TRAIN_ONLY, dtype=int)
    for fold, (_, members) in enumerate(stratifier.split(np.zeros(len(labels)), labels)):
        fold_of[members] = fold
    return fold_of


def _counts(labels: np.ndarray, cells: np.ndarray) -> dict:
    return {"images": len(labels), "cells": int(cells.sum()),
            "class_images": labels.sum(axis=0).astype(int).tolist(),
            "class_cells": (labels * cells[:, None]).sum(axis=0).astype(int).tolist()}


def share_deviation(labels: np.ndarray, fold_of: np.ndarray, folds: int) -> np.ndarray:
    """Per class: the largest relative deviation of its per-fold image share from its overall
    share, ``max_k |share_k / share - 1|`` (0 for a class without images)."""
    labels = np.asarray(labels, dtype=bool)
    overall = labels.mean(axis=0)
    per_fold = np.stack([labels[fold_of == k].mean(axis=0) for k in range(folds)])
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.abs(per_fold / overall - 1).max(axis=0)
    return np.where(overall > 0, deviation, 0.0)


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitOutcome:
    """What :func:`split_dataset` did: the split, and whether files were (re)written."""

    split: Split
    written: bool
    stats: dict


def _source_name(extra: Path, dataset: Path) -> str:
    return Path(os.path.relpath(extra.resolve(), dataset.resolve())).as_posix()


def _extra_images(dataset: Path, extras: Sequence[str | os.PathLike], seen: set[str]
                  ) -> tuple[list[pd.DataFrame], list[dict], np.ndarray, np.ndarray]:
    """The extra datasets' images (all train-only, fold -1; an id already taken is left out with
    a warning): their split rows, their source entries, their labels and kept-cell counts."""
    frames, sources = [], []
    labels, cells = [np.zeros((0, NUM_CLASSES), bool)], [np.zeros(0, int)]
    for extra in map(Path, extras):
        name = _source_name(extra, dataset)
        if name == SELF or name in (s["source"] for s in sources):
            raise InputError(f"extra dataset {extra} is given twice or is the dataset itself")
        table = read_image_table(extra)
        new = np.array([i not in seen for i in table.ids], dtype=bool)
        if not new.all():
            log.warning("%s: %d image(s) whose id is already taken are left out (e.g. %s)", extra,
                        (~new).sum(), table.ids[~new][0])
        seen.update(table.ids[new])
        frames.append(pd.DataFrame({"image_id": table.ids[new], "fold": TRAIN_ONLY, "source": name}))
        labels.append(table.labels[new])
        cells.append(table.cells[new])
        sources.append({"source": name, "role": "train only (fold -1)", "cells_sha256": table.sha256,
                        "images": int(new.sum()), "cells": int(table.cells[new].sum()),
                        "images_without_kept_cells": table.dropped,
                        "images_with_taken_ids": int((~new).sum())})
    return frames, sources, np.concatenate(labels), np.concatenate(cells)


def _check_enough_images(dataset: Path, images: int, folds: int) -> None:
    if images < folds:
        fewer = f": pass --folds {images} or fewer" if images >= 2 else ": at least 2 are needed"
        raise InputError(f"{cells_table_path(dataset)}: {images} image(s) with kept cells, "
                         f"too few for {folds} folds{fewer}")


def split_dataset(dataset: str | os.PathLike, extras: Sequence[str | os.PathLike] = (),
                  settings: SplitSettings | None = None) -> SplitOutcome:
    """Split ``dataset`` into folds (extras always train) and write ``DATASET/split/``.

    ``settings`` defaults to ``SplitSettings()`` (5 folds, validation fold 0, seed 42). Raises
    InputError for an unusable dataset or extra dataset, or for fewer images than folds.
    """
    dataset = Path(dataset)
    settings = settings or SplitSettings()
    own = read_image_table(dataset)
    _check_enough_images(dataset, len(own.ids), settings.folds)
    fold_of = assign_folds(own.labels, settings.folds, settings.seed)
    frames = [pd.DataFrame({"image_id": own.ids, "fold": fold_of, "source": SELF})]
    sources = [{"source": SELF, "role": "folds", "cells_sha256": own.sha256,
                "images": len(own.ids), "cells": int(own.cells.sum()),
                "images_without_kept_cells": own.dropped}]
    if own.dropped:
        log.info("%s: %d image(s) without kept cells left out", dataset, own.dropped)

    extra_frames, extra_sources, extra_l, extra_c = _extra_images(dataset, extras, set(own.ids))
    frames += extra_frames
    sources += extra_sources

    csv_text = pd.concat(frames, ignore_index=True).to_csv(index=False, lineterminator="\n")
    validation = fold_of == settings.fold
    deviation = share_deviation(own.labels, fold_of, settings.folds)
    stats = {
        "format": SPLIT_FORMAT,
        "method": "iterstrat MultilabelStratifiedKFold(shuffle=True, random_state=seed) on the "
                  "image-level multi-hot labels of the images sorted by id; extra images: fold -1",
        "folds": settings.folds,
        "fold": settings.fold,
        "seed": settings.seed,
        "sources": sources,
        "classes": list(CLASS_NAMES),
        "per_fold": [{"fold": k, **_counts(own.labels[fold_of == k], own.cells[fold_of == k])}
                     for k in range(settings.folds)],
        "extra": _counts(extra_l, extra_c),
        "train": _counts(np.concatenate([own.labels[~validation], extra_l]),
                         np.concatenate([own.cells[~validation], extra_c])),
        "validation": _counts(own.labels[validation], own.cells[validation]),
        "class_share_max_relative_deviation": [round(float(d), 4) for d in deviation],
        "split_csv_sha256": hashlib.sha256(csv_text.encode()).hexdigest(),
    }
    json_text = json.dumps(stats, indent=2) + "\n"
    written = write_split(dataset, csv_text, json_text)
    _log_summary(stats, own)
    return SplitOutcome(split=read_split(dataset, check_current=False), written=written, stats=stats)


def _log_summary(stats: dict, own: ImageTable) -> None:
    for entry in stats["per_fold"]:
        role = "validation" if entry["fold"] == stats["fold"] else "train"
        log.info("fold %d (%s): %d images, %d cells", entry["fold"], role, entry["images"],
                 entry["cells"])
    if stats["extra"]["images"]:
        log.info("extra (train only): %d images, %d cells", stats["extra"]["images"],
                 stats["extra"]["cells"])
    shares = np.array([e["class_images"] for e in stats["per_fold"]]) \
        / np.array([e["images"] for e in stats["per_fold"]])[:, None]
    totals = own.labels.sum(axis=0)
    for c, name in enumerate(CLASS_NAMES):
        log.debug("class %2d %-40s %5d images, share per fold %6.2f%%..%6.2f%% (max deviation %.1f%%)",
                  c, name, totals[c], 100 * shares[:, c].min(), 100 * shares[:, c].max(),
                  100 * stats["class_share_max_relative_deviation"][c])
    rare = [str(c) for c in range(len(CLASS_NAMES)) if totals[c] < stats["folds"]]
    if rare:
        log.warning("classes with fewer images than folds (they cannot be in every fold): %s",
                    ", ".join(rare))
    common = totals >= 50
    if common.any():
        log.info("largest per-class share deviation across folds (classes with >= 50 images): %.1f%%",
                 100 * max(stats["class_share_max_relative_deviation"][c] for c in np.flatnonzero(common)))
    log.info("train: %d images, %d cells; validation (fold %d): %d images, %d cells",
             stats["train"]["images"], stats["train"]["cells"], stats["fold"],
             stats["validation"]["images"], stats["validation"]["cells"])
