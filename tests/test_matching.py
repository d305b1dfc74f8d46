"""Tests of hpasc.submission.matching: hand-made cases with known IoUs, the edge cases of empty images and
odd label values, and agreement with a brute-force per-object computation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hpasc.submission.matching import MatchResult, iou_matrix, match_instances


def square(shape: tuple[int, int], *boxes: tuple[int, int, int, int, int], dtype=np.int32) -> np.ndarray:
    """A label image with each (label, row, col, height, width) box painted in order."""
    labels = np.zeros(shape, dtype)
    for label, row, col, height, width in boxes:
        labels[row:row + height, col:col + width] = label
    return labels


def brute_force_iou(truth: np.ndarray, pred: np.ndarray) -> dict[tuple[int, int], float]:
    ious = {}
    for t in np.unique(truth[truth > 0]):
        for p in np.unique(pred[pred > 0]):
            inter = np.sum((truth == t) & (pred == p))
            if inter:
                ious[int(t), int(p)] = inter / np.sum((truth == t) | (pred == p))
    return ious


def test_perfect_match():
    truth = square((60, 60), (1, 0, 0, 10, 10), (2, 20, 20, 15, 5), (3, 40, 5, 10, 30))
    result = match_instances(truth, truth)
    assert result.pairs == ((1, 1, 1.0), (2, 2, 1.0), (3, 3, 1.0))
    assert (result.true_positives, result.false_positives, result.false_negatives) == (3, 0, 0)
    assert result.precision == result.recall == result.f1 == 1.0


def test_both_empty_agree_perfectly():
    empty = np.zeros((8, 9), np.uint16)
    result = match_instances(empty, empty)
    assert result == MatchResult(pairs=(), true_positives=0, false_positives=0, false_negatives=0)
    assert result.precision == result.recall == result.f1 == 1.0


def test_empty_truth():
    pred = square((30, 30), (4, 0, 0, 5, 5), (7, 10, 10, 5, 5))
    result = match_instances(np.zeros_like(pred), pred)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (0, 2, 0)
    assert result.precision == 0.0 and result.recall == 1.0 and result.f1 == 0.0
    assert result.n_truth == 0 and result.n_pred == 2


def test_empty_pred():
    truth = square((30, 30), (1, 0, 0, 5, 5))
    result = match_instances(truth, np.zeros_like(truth))
    assert (result.true_positives, result.false_positives, result.false_negatives) == (0, 0, 1)
    assert result.precision == 1.0 and result.recall == 0.0 and result.f1 == 0.0


@pytest.mark.parametrize(("kept", "matched"), [(240, True), (239, False)])
def test_iou_just_at_and_below_threshold(kept, matched):
    # The prediction is the first `kept` pixels (raster order) of a 20×20 truth: IoU = kept / 400.
    truth = square((30, 30), (1, 5, 5, 20, 20))
    pred = np.zeros_like(truth)
    rows, cols = np.nonzero(truth)
    pred[rows[:kept], cols[:kept]] = 9
    result = match_instances(truth, pred)
    assert result.true_positives == int(matched)
    assert result.false_negatives == result.false_positives == int(not matched)
    if matched:
        assert result.pairs == ((1, 9, 0.6),)


@pytest.mark.parametrize(("shift", "matched"), [(5, True), (6, False)])
def test_shifted_object(shift, matched):
    # A 20-wide bar shifted sideways by s: IoU = (20 - s) / (20 + s) = 0.6 at s = 5, 0.54 at s = 6.
    truth = square((10, 60), (1, 0, 10, 10, 20))
    pred = square((10, 60), (2, 0, 10 + shift, 10, 20))
    result = match_instances(truth, pred)
    assert result.true_positives == int(matched)
    assert result.f1 == (1.0 if matched else 0.0)


def test_iou_threshold_argument():
    truth = square((10, 60), (1, 0, 10, 10, 20))
    pred = square((10, 60), (2, 0, 16, 10, 20))  # IoU 14/26
    assert match_instances(truth, pred).true_positives == 0
    assert match_instances(truth, pred, iou_threshold=0.5).pairs == ((1, 2, 14 / 26),)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances(truth, pred, iou_threshold=0)


def test_one_prediction_covering_two_truths():
    truth = square((20, 40), (1, 0, 0, 10, 10), (2, 0, 10, 10, 10))
    pred = square((20, 40), (5, 0, 0, 10, 20))  # IoU 0.5 with each truth
    result = match_instances(truth, pred)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (0, 1, 2)
    # Below 0.5 the prediction is still matched only once: greedily, ties to the lower truth id.
    loose = match_instances(truth, pred, iou_threshold=0.5)
    assert loose.pairs == ((1, 5, 0.5),)
    assert (loose.true_positives, loose.false_positives, loose.false_negatives) == (1, 0, 1)


def test_greedy_takes_the_best_pair_first():
    # Truth 1 overlaps pred 1 (IoU 80/100) and pred 2 (20/210); truth 2 overlaps pred 2 (90/140).
    truth = square((10, 40), (1, 0, 0, 10, 10), (2, 0, 12, 10, 10))
    pred = square((10, 40), (1, 0, 0, 10, 8), (2, 0, 8, 10, 13))
    result = match_instances(truth, pred, iou_threshold=0.05)
    assert result.pairs == ((1, 1, 0.8), (2, 2, 90 / 140))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int64, np.uint64])
def test_label_values_above_255(dtype):
    truth = square((20, 20), (300, 0, 0, 10, 10), (70000 if dtype != np.uint16 else 65535, 10, 10, 10, 10),
                   dtype=dtype)
    pred = square((20, 20), (256, 0, 0, 10, 10), (1000, 10, 10, 10, 9), dtype=dtype)
    result = match_instances(truth, pred)
    big = int(truth[15, 15])
    assert result.pairs == ((300, 256, 1.0), (big, 1000, 0.9))


def test_huge_label_values():
    truth = square((20, 20), (2**40, 0, 0, 10, 10), (5, 10, 10, 10, 10), dtype=np.int64)
    pred = square((20, 20), (2**62, 0, 0, 10, 10), dtype=np.uint64)
    result = match_instances(truth, pred)
    assert result.pairs == ((2**40, 2**62, 1.0),)
    assert (result.false_positives, result.false_negatives) == (0, 1)


def test_non_contiguous_ids_and_mixed_dtypes():
    truth = square((30, 30), (17, 0, 0, 10, 10), (3, 20, 20, 10, 10), dtype=np.uint8)
    pred = square((30, 30), (9, 0, 0, 10, 10), (42, 20, 20, 10, 10), dtype=np.int32)
    result = match_instances(truth, pred)
    assert result.pairs == ((3, 42, 1.0), (17, 9, 1.0))


def test_boolean_masks_are_one_object():
    mask = square((10, 10), (1, 2, 2, 4, 4)).astype(bool)
    assert match_instances(mask, mask).pairs == ((1, 1, 1.0),)


def test_bad_inputs():
    labels = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="shape"):
        match_instances(labels, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match=">= 0"):
        match_instances(labels - 1, labels)
    with pytest.raises(ValueError, match="integers"):
        match_instances(labels.astype(np.float32), labels)


def test_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = rng.choice([0, 0, 0, 2, 5, 300], size=(12, 15))
        pred = rng.choice([0, 0, 1, 7, 8], size=(12, 15))
        truth_ids, pred_ids, iou = iou_matrix(truth, pred)
        expected = brute_force_iou(truth, pred)
        found = {(int(t), int(p)): iou[i, j] for i, t in enumerate(truth_ids)
                 for j, p in enumerate(pred_ids) if iou[i, j] > 0}
        assert found.keys() == expected.keys()
        assert all(found[k] == pytest.approx(v) for k, v in expected.items())
        result = match_instances(truth, pred, iou_threshold=0.2)
        matched_truth = [t for t, _, _ in result.pairs]
        matched_pred = [p for _, p, _ in result.pairs]
        assert len(set(matched_truth)) == len(matched_truth) and len(set(matched_pred)) == len(matched_pred)
        assert result.true_positives + result.false_negatives == len(truth_ids)
        assert result.true_positives + result.false_positives == len(pred_ids)


def test_large_image_is_fast():
    # 2048² with 49 objects: one pass over the pixels, not one per object (typically ~0.05 s).
    truth = np.zeros((2048, 2048), np.uint16)
    for k in range(49):
        row, col = divmod(k, 7)
        truth[row * 290:row * 290 + 250, col * 290:col * 290 + 250] = k + 1
    pred = np.roll(truth, 20, axis=1)
    match_instances(truth, pred)
    start = time.perf_counter()
    result = match_instances(truth, pred)
    assert time.perf_counter() - start < 1.0
    assert result.true_positives == 49
    assert all(iou == pytest.approx(230 / 270) for _, _, iou in result.pairs)
