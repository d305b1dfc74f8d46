"""Matching two instance-label images object to object by intersection over union (IoU).

``match_instances(truth, pred)`` pairs each truth object with at most one predicted object and
vice versa, greedily by descending IoU, keeping pairs with IoU >= the threshold (0.6, the
competition's). At a threshold above 0.5 the matching is unique whatever the order: IoU(A, B) > 0.5
means B covers more than half of A (and A more than half of B), which two disjoint objects cannot
both do, so each object has at most one candidate. At 0.5 and below the greedy order decides.

All overlaps are counted in one pass (``np.bincount`` on a combined code of the two labels), so
the cost is a few passes over the pixels whatever the number of objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MatchResult", "iou_matrix", "match_instances"]


@dataclass(frozen=True)
class MatchResult:
    """The outcome of matching ``truth`` to ``pred`` objects.

    ``pairs`` holds (truth id, pred id, IoU) per match, by descending IoU. Precision, recall and F1
    follow the usual definitions; where a denominator is zero nothing could go wrong, so the ratio
    is 1.0: precision without predictions, recall without truth, and F1 of two empty images. F1 =
    2·TP / (2·TP + FP + FN) is 0.0 for an empty image against a non-empty one.
    """

    pairs: tuple[tuple[int, int, float], ...]
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def n_truth(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def n_pred(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def precision(self) -> float:
        return self.true_positives / self.n_pred if self.n_pred else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.n_truth if self.n_truth else 1.0

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 1.0


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth ids, pred ids, IoU matrix truth × pred) of the objects (ids > 0) of two label images."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {truth.shape} vs {pred.shape}")
    truth_ids, truth_index = _compact(truth, "truth")
    pred_ids, pred_index = _compact(pred, "pred")
    # Index 0 is the background on both sides; its row and column give the objects' areas.
    rows, cols = len(truth_ids) + 1, len(pred_ids) + 1
    code_type = np.int32 if rows * cols < 2**31 else np.int64
    code = truth_index.astype(code_type) * code_type(cols) + pred_index
    overlap = np.bincount(code, minlength=rows * cols).reshape(rows, cols)
    truth_area = overlap.sum(axis=1)[1:, None]
    pred_area = overlap.sum(axis=0)[None, 1:]
    inter = overlap[1:, 1:]
    union = truth_area + pred_area - inter
    # Every object has area >= 1, so the union is never zero.
    return truth_ids, pred_ids, inter / np.maximum(union, 1)


def match_instances(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.6) -> MatchResult:
    """Match the objects of two integer label images (0 = background; ids need not be contiguous).

    Greedy by descending IoU (ties broken by truth id, then pred id): a pair is kept when its IoU is
    at least ``iou_threshold`` and neither object is matched yet, so each object is matched once.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    truth_ids, pred_ids, iou = iou_matrix(truth, pred)
    t_index, p_index = np.nonzero(iou >= iou_threshold)
    scores = iou[t_index, p_index]
    # np.nonzero lists (truth, pred) in ascending order; a stable sort keeps that order within ties.
    order = np.argsort(-scores, kind="stable")
    used_truth: set[int] = set()
    used_pred: set[int] = set()
    pairs = []
    for k in order:
        t, p = int(t_index[k]), int(p_index[k])
        if t in used_truth or p in used_pred:
            continue
        used_truth.add(t)
        used_pred.add(p)
        pairs.append((int(truth_ids[t]), int(pred_ids[p]), float(scores[k])))
    matched = len(pairs)
    return MatchResult(pairs=tuple(pairs), true_positives=matched,
                       false_positives=len(pred_ids) - matched, false_negatives=len(truth_ids) - matched)


def _compact(labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted object ids > 0, per-pixel index: 0 for background, k for the k-th id) of a label image."""
    if labels.dtype.kind not in "iub":
        raise ValueError(f"{name} labels must be integers, got {labels.dtype}")
    flat = labels.ravel().view(np.uint8) if labels.dtype == np.bool_ else labels.ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    low, high = int(flat.min()), int(flat.max())
    if low < 0:
        raise ValueError(f"{name} labels must be >= 0, got {low}")
    if high <= max(1 << 16, flat.size):
        # A lookup table over all values: one bincount finds the ids, one take maps the pixels.
        if not np.can_cast(flat.dtype, np.intp):
            flat = flat.astype(np.intp)  # bincount refuses uint64 even for small values
        present = np.bincount(flat, minlength=high + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        table = np.zeros(high + 1, np.int32)
        table[ids] = np.arange(1, len(ids) + 1)
        return ids, table[flat]
    # Huge ids: a sort finds them (slower, but such labels are rare).
    values, inverse = np.unique(flat, return_inverse=True)
    if values[0] == 0:
        return values[1:].astype(np.int64), inverse.astype(np.intp)
    return values.astype(np.int64), inverse.astype(np.intp) + 1
