"""The competition metric on a submission against cell-level truth.

``hpasc-evaluate --submission submission.csv --truth DIR`` reads the truth as the
synthetic generator writes it (``DIR/{ID}.png`` uint16 cell masks, ``DIR/cells.csv`` with
``ID,mask_id,Label``, the cell's classes ``|``-joined) and prints one line per class
(``class name AP n_truth n_pred``) and, last, ``mAP: <value>``.

The rules: the Open Images challenge's instance-segmentation average precision at mask IoU >= 0.6,
which the competition used (``--rules strict`` counts every prediction instead):

- per class c, the ground-truth instances are the truth cells carrying c; the predictions are
  the ``c confidence mask`` triplets of c in all images, except three kinds, which are ignored
  (neither true nor false positives): a class that no truth cell of that image carries (Open
  Images evaluates only the classes verified in an image), a mask with no pixel, and a NaN
  confidence;
- predictions are taken in descending confidence over all images (ties in image-ID order, then in
  the order of the PredictionString); each is matched to the not yet matched truth cell of its
  image and class with the highest IoU >= 0.6: a true positive if there is one, else a false
  positive (so a second prediction of an already matched cell is a false positive);
- AP is the area under the precision envelope: precision made non-increasing from the right,
  summed over the recall steps (Open Images' ``compute_average_precision``);
- a class without truth cells has no AP and is left out of the mean; a class with truth but no
  predictions has AP 0.

Because truth cells come from a label image they are disjoint, and a mask can have IoU > 0.5 with
at most one of two disjoint cells (it would have to cover more than half of itself twice). So at a
threshold above 0.5 each prediction has at most one candidate cell, and "the unmatched cell with
the highest IoU" is simply that candidate unless an earlier prediction took it; thresholds of 0.5
and below, where the greedy order would matter, are refused.

IoU is computed by pycocotools on the run-length encodings (no mask is decoded to pixels), so
predicted masks may overlap each other. Images of the truth without a submission row have no
predictions; a submission row for an image outside the truth is an error.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask

from hpasc.core import atomic, runtime
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES, parse_labels
from hpasc.core.errors import InputError
from hpasc.core.images import read_label_image
from hpasc.submission.rle import Rle, cell_rles, text_to_rle
from hpasc.submission.rows import parse_prediction_string, read_submission

log = logging.getLogger(__name__)

IOU_THRESHOLD = 0.6
TRUTH_TABLE = "cells.csv"
RULES = ("open-images", "strict")
IGNORED = ("class not in the image", "empty mask", "NaN confidence")


@dataclass(frozen=True)
class TruthImage:
    """One image's truth: its size and, per labelled cell (mask id), the mask and the classes.

    Build it with :meth:`from_labels`, which guarantees the disjoint cells the matching relies on.
    """

    height: int
    width: int
    masks: dict[int, Rle]
    classes: dict[int, tuple[int, ...]]

    @property
    def image_classes(self) -> set[int]:
        """The classes verified in the image: those its truth cells carry."""
        return {c for classes in self.classes.values() for c in classes}

    @classmethod
    def from_labels(cls, labels: np.ndarray, classes: Mapping[int, Iterable[int]]) -> TruthImage:
        """From a label image and mask id → classes (ValueError for an id absent from the image).
        Cells of the image without classes are no instance of any class and are left out."""
        height, width = labels.shape
        return cls(height, width, cell_rles(labels, list(classes)),
                   {int(m): tuple(c) for m, c in classes.items()})


@dataclass(frozen=True)
class ClassScore:
    """A class's AP (NaN without truth cells) and how many truth cells and predictions it has."""

    ap: float
    n_truth: int
    n_pred: int


@dataclass(frozen=True)
class Result:
    """Every class's score (all 19, those without truth included) and the predictions the rules
    ignored, by reason (:data:`IGNORED`)."""

    per_class: dict[int, ClassScore]
    ignored: dict[str, int]

    @property
    def scored(self) -> dict[int, float]:
        """AP of each class that has truth cells: the classes the mean is taken over."""
        return {c: s.ap for c, s in self.per_class.items() if s.n_truth}

    @property
    def mean(self) -> float:
        """The mAP over the classes with truth cells (NaN when none has any)."""
        return float(np.mean(list(self.scored.values()))) if self.scored else float("nan")


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """Open Images AP of predictions with ``scores`` and true-positive flags ``is_tp`` (taken in
    descending score, ties in the given order) against ``n_truth`` instances; NaN for none."""
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    true_positives = np.cumsum(np.asarray(is_tp, dtype=bool)[order])
    ranks = np.arange(1, len(order) + 1)
    recall = np.concatenate(([0.0], true_positives / n_truth, [1.0]))
    precision = np.concatenate(([0.0], true_positives / ranks, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def score_submission(submission: pd.DataFrame, truth: Mapping[str, TruthImage],
             iou_threshold: float = IOU_THRESHOLD, rules: str = "open-images") -> Result:
    """Score a submission table (:func:`hpasc.submission.read_submission`) against the truth
    (image ID → :class:`TruthImage`) under ``rules`` (:data:`RULES`). InputError for a row that
    cannot be scored."""
    if not 0.5 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must lie in (0.5, 1], got {iou_threshold}")
    if rules not in RULES:
        raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
    rows = _rows_by_id(submission, truth)
    scores: list[list[float]] = [[] for _ in range(NUM_CLASSES)]
    # A truth cell's number over all images; -1 for a prediction that matches no cell.
    hits: list[list[int]] = [[] for _ in range(NUM_CLASSES)]
    n_truth = np.zeros(NUM_CLASSES, np.int64)
    ignored = dict.fromkeys(IGNORED, 0)
    first_cell = 0
    for image_id in sorted(truth):
        image = truth[image_id]
        cell_ids = list(image.masks)
        for classes in image.classes.values():
            n_truth[list(set(classes))] += 1
        predictions = _image_predictions(image_id, rows[image_id], image, iou_threshold) \
            if image_id in rows else []
        for klass, score, hit, empty in predictions:
            reason = _ignored_because(klass, score, empty, image) if rules == "open-images" else None
            if reason is not None:
                ignored[reason] += 1
                continue
            scores[klass].append(score)
            matched = hit is not None and klass in image.classes[cell_ids[hit]]
            hits[klass].append(first_cell + hit if matched else -1)
        first_cell += len(cell_ids)
    return Result({klass: _class_score(scores[klass], hits[klass], int(n_truth[klass]))
                   for klass in range(NUM_CLASSES)}, ignored)


def _ignored_because(klass: int, score: float, empty: bool, image: TruthImage) -> str | None:
    """Why the Open Images rules ignore a prediction (:data:`IGNORED`), or None when it counts."""
    if klass not in image.image_classes:
        return IGNORED[0]
    if empty:
        return IGNORED[1]
    return IGNORED[2] if math.isnan(score) else None


def _class_score(scores: list[float], hits: list[int], n_truth: int) -> ClassScore:
    class_scores = np.asarray(scores, np.float64)
    order = np.argsort(-class_scores, kind="stable")
    cells = np.asarray(hits, np.int64)[order]
    # Each prediction has at most one candidate cell: the first to reach it takes it.
    is_tp = np.zeros(len(cells), bool)
    _, first = np.unique(cells, return_index=True)
    is_tp[first] = True
    is_tp &= cells >= 0
    return ClassScore(average_precision(class_scores[order], is_tp, n_truth), n_truth, len(cells))


def _rows_by_id(submission: pd.DataFrame, truth: Mapping[str, TruthImage]) -> dict[str, pd.Series]:
    duplicated = submission["ID"].duplicated()
    if duplicated.any():
        raise InputError(f"image {submission['ID'][duplicated].iloc[0]} has two submission rows")
    unknown = [i for i in submission["ID"] if i not in truth]
    if unknown:
        raise InputError(f"submission image {unknown[0]} is not in the truth "
                         f"({len(unknown)} such image(s))")
    return {row["ID"]: row for _, row in submission.iterrows()}


def _image_predictions(image_id: str, row: pd.Series, image: TruthImage,
                       iou_threshold: float) -> list[tuple[int, float, int | None, bool]]:
    """(class, confidence, index of the truth cell the mask reaches IoU >= threshold with or None,
    whether the mask is empty) per triplet of one submission row."""
    if (row["ImageWidth"], row["ImageHeight"]) != (image.width, image.height):
        raise InputError(f"submission image {image_id}: size {row['ImageWidth']}x{row['ImageHeight']} "
                         f"differs from the truth's {image.width}x{image.height}")
    try:
        triplets = parse_prediction_string(row["PredictionString"])
    except ValueError as exc:
        raise InputError(f"submission image {image_id}: {exc}") from None
    # Every cell repeats its mask once per class: decode and compare each distinct string once.
    distinct = list(dict.fromkeys(mask for _, _, mask in triplets))
    rles = []
    for text in distinct:
        try:
            rles.append(text_to_rle(text, image.height, image.width))
        except ValueError as exc:
            raise InputError(f"submission image {image_id}: mask {text[:20]!r}...: {exc}") from None
    best: dict[str, int | None] = dict.fromkeys(distinct)
    empty = {text: area == 0 for text, area in zip(distinct, coco_mask.area(rles) if rles else [])}
    if rles and image.masks:
        iou = coco_mask.iou(rles, list(image.masks.values()), [0] * len(image.masks))
        for text, row_iou in zip(distinct, iou):
            cell = int(np.argmax(row_iou))
            best[text] = cell if row_iou[cell] >= iou_threshold else None
    return [(klass, score, best[mask], empty[mask]) for klass, score, mask in triplets]


def read_truth(folder: str | os.PathLike, options: runtime.CommonOptions | None = None, suffix: str = "",
               labels: str | os.PathLike | None = None) -> dict[str, TruthImage]:
    """The truth of ``folder``: every ``{ID}{suffix}.png`` label image (e.g. HPA-style
    ``{ID}_cellmask.png`` with ``suffix="_cellmask"``), with the classes of its cells from the
    cell-label CSV ``labels`` (default ``folder/cells.csv``; a cell without a row carries no class)."""
    folder = Path(folder)
    table_path = Path(labels) if labels else folder / TRUTH_TABLE
    if not folder.is_dir() or not table_path.is_file():
        raise InputError(f"truth folder {folder} needs {{ID}}{suffix}.png label images and a cell-label "
                         f"CSV ({table_path} is missing)")
    images = {p.name.removesuffix(f"{suffix}.png"): p for p in folder.glob(f"*{suffix}.png")
              if not atomic.is_temporary(p)}
    table = read_truth_table(table_path)
    for image_id, cells in table.items():
        if image_id not in images:
            raise InputError(f"{table_path} line {min(line for _, line in cells.values())}: no label image "
                             f"{image_id}{suffix}.png in {folder}")
    truth = {}
    for image_id in (options or runtime.CommonOptions()).bar(sorted(images), desc="truth images", unit="image"):
        labels_image = read_label_image(images[image_id])
        cells = table.get(image_id, {})
        try:
            truth[image_id] = TruthImage.from_labels(labels_image, {m: classes for m, (classes, _) in cells.items()})
        except ValueError:
            absent = min(set(cells) - set(np.unique(labels_image).tolist()))
            raise InputError(f"{table_path} line {cells[absent][1]}: mask_id {absent} is not "
                             f"a cell of {images[image_id]}") from None
    return truth


def read_truth_table(path: str | os.PathLike) -> dict[str, dict[int, tuple[list[int], int]]]:
    """A truth cells.csv (``ID,mask_id,Label``, as the synthetic generator writes it): image ID →
    mask id → (the cell's classes, its CSV line). InputError naming the line of a bad row."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in ("ID", "mask_id", "Label") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    cells: dict[str, dict[int, tuple[list[int], int]]] = {}
    for line, (image_id, mask_text, label) in enumerate(
            zip(table["ID"], table["mask_id"], table["Label"]), start=2):
        if not mask_text.isdigit() or int(mask_text) < 1:
            raise InputError(f"{path} line {line}: mask_id {mask_text!r} is not a positive integer")
        mask_id = int(mask_text)
        if mask_id in cells.get(image_id, {}):
            raise InputError(f"{path} line {line}: cell {mask_id} of {image_id} already listed on "
                             f"line {cells[image_id][mask_id][1]}")
        try:
            cells.setdefault(image_id, {})[mask_id] = (parse_labels(label), line)
        except ValueError as exc:
            raise InputError(f"{path} line {line}: bad Label {label!r} ({exc})") from None
    return cells


def report(result: Result) -> list[str]:
    """The printed lines: one per class, then the mAP (last)."""
    lines = [f"{'class':>5} {'name':<41} {'AP':>6} {'n_truth':>7} {'n_pred':>7}"]
    for klass, score in result.per_class.items():
        ap = f"{score.ap:6.4f}" if score.n_truth else f"{'-':>6}"
        note = "" if score.n_truth else "  (no truth cells: left out of the mean)"
        lines.append(f"{klass:>5} {CLASS_NAMES[klass]:<41} {ap} {score.n_truth:>7} {score.n_pred:>7}{note}")
    ignored = ", ".join(f"{n} ({reason})" for reason, n in result.ignored.items() if n)
    if ignored:
        lines.append(f"ignored predictions: {ignored}")
    lines.append(f"mean over the {len(result.scored)} classes with truth cells")
    lines.append(f"mAP: {result.mean:.4f}")
    return lines


def score_submission_files(submission: Path, truth_folder: Path, options: runtime.CommonOptions, truth_suffix: str = "",
                   truth_labels: Path | None = None, iou_threshold: float = IOU_THRESHOLD,
                   rules: str = "open-images") -> Result:
    """Score a submission file against a truth folder (masks ``{ID}{truth_suffix}.png`` and
    ``cells.csv``, or ``truth_labels``); a truth image without a row counts as predicting nothing."""
    rows = read_submission(submission)
    truth = read_truth(truth_folder, options, truth_suffix, truth_labels)
    absent = len(set(truth) - set(rows["ID"]))
    if absent:
        log.warning("%d truth image(s) have no submission row: scored as without predictions", absent)
    result = score_submission(rows, truth, iou_threshold, rules)
    if not result.scored:
        raise InputError(f"{truth_labels or truth_folder / TRUTH_TABLE}: no cell carries a class, nothing to score")
    return result
