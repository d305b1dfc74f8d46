"""The competition metric (hpasc.submission.metric) on hand-worked cases and end to end.

Notation in the comments: predictions are listed in descending confidence; P@k is the precision
after the k-th, R@k the recall; AP = sum over the recall steps of (step) × (envelope precision,
the highest precision at that rank or later).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask

from hpasc.core.classes import parse_labels
from hpasc.core.errors import InputError
from hpasc.core.images import read_label_image, write_label_image
from hpasc.submission.matching import iou_matrix
from hpasc.submission.metric import TruthImage, average_precision, read_truth, score_submission
from hpasc.submission.rle import encode_cells, encode_mask, text_to_rle
from hpasc.submission.rows import SubmissionRow, parse_prediction_string, prediction_string, write_submission
from tests.conftest import assert_one_line_error, run_script

SIZE = 10


def _two_cells() -> np.ndarray:
    """A 10x10 label image: cell 1 is a 4x5 block (20 px) at the top left, cell 2 a 3x3 block."""
    labels = np.zeros((SIZE, SIZE), np.uint16)
    labels[0:4, 0:5] = 1
    labels[6:9, 6:9] = 2
    return labels


def _box(rows: slice, cols: slice) -> str:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[rows, cols] = True
    return encode_mask(mask)


CELL_1, CELL_2 = _box(slice(0, 4), slice(0, 5)), _box(slice(6, 9), slice(6, 9))
ELSEWHERE = _box(slice(9, 10), slice(0, 3))  # touches no cell


def _truth(classes: dict[int, list[int]], labels: np.ndarray | None = None) -> TruthImage:
    return TruthImage.from_labels(_two_cells() if labels is None else labels, classes)


def _submission(rows: dict[str, list[tuple[int, float, str]]]) -> pd.DataFrame:
    return pd.DataFrame({"ID": list(rows), "ImageWidth": SIZE, "ImageHeight": SIZE,
                         "PredictionString": [" ".join(f"{c} {s} {m}" for c, s, m in triplets)
                                              for triplets in rows.values()]})


def test_perfect_predictions_score_one() -> None:
    truth = {"a": _truth({1: [0, 5], 2: [5]})}
    scores = np.zeros((2, 19))
    scores[0, [0, 5]] = scores[1, 5] = 1.0
    submission = _submission({"a": parse_prediction_string(prediction_string([CELL_1, CELL_2], scores))})
    result = score_submission(submission, truth)
    assert result.mean == 1.0
    assert result.per_class[5].n_truth == 2 and result.per_class[5].n_pred == 2


def test_empty_submission_scores_zero() -> None:
    truth = {"a": _truth({1: [0], 2: [3]})}
    assert score_submission(_submission({}), truth).mean == 0.0
    assert score_submission(_submission({"a": []}), truth).mean == 0.0


def test_false_positive_ranked_above_true_positives() -> None:
    # FP 0.9, TP 0.8, TP 0.7: P = 0, 1/2, 2/3; R = 0, 1/2, 1. The envelope at both recall steps is
    # 2/3, so AP = 0.5 * 2/3 + 0.5 * 2/3 = 2/3.
    truth = {"a": _truth({1: [0], 2: [0]})}
    submission = _submission({"a": [(0, 0.9, ELSEWHERE), (0, 0.8, CELL_1), (0, 0.7, CELL_2)]})
    assert score_submission(submission, truth).mean == pytest.approx(2 / 3)
    # TP 0.9, FP 0.8, TP 0.7: P = 1, 1/2, 2/3 → AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    submission = _submission({"a": [(0, 0.9, CELL_1), (0, 0.8, ELSEWHERE), (0, 0.7, CELL_2)]})
    assert score_submission(submission, truth).mean == pytest.approx(5 / 6)


def test_listing_order_does_not_matter_only_confidence() -> None:
    truth = {"a": _truth({1: [0], 2: [0]})}
    submission = _submission({"a": [(0, 0.7, CELL_2), (0, 0.8, ELSEWHERE), (0, 0.9, CELL_1)]})
    assert score_submission(submission, truth).mean == pytest.approx(5 / 6)


def test_iou_threshold_boundary() -> None:
    # Cell 1 has 20 px. 12 of them: IoU 12/20 = 0.6, a match (>= 0.6). The same 12 plus one pixel
    # outside: 12/21 = 0.571, no match. 13 of them: 13/20 = 0.65, a match.
    twelve = np.zeros((SIZE, SIZE), bool)
    twelve[0:4, 0:3] = True
    twelve_plus_one = twelve.copy()
    twelve_plus_one[5, 0] = True
    thirteen = twelve.copy()
    thirteen[0, 3] = True
    truth = {"a": _truth({1: [0]})}
    for mask, expected in ((twelve, 1.0), (twelve_plus_one, 0.0), (thirteen, 1.0)):
        submission = _submission({"a": [(0, 0.5, encode_mask(mask))]})
        assert score_submission(submission, truth).mean == expected


def test_second_prediction_of_a_matched_cell_is_a_false_positive() -> None:
    # Two masks match cell 1 (the whole block 0.9; the block less one pixel, IoU 19/20, 0.8), then
    # cell 2 at 0.7: TP, FP, TP → P = 1, 1/2, 2/3; R = 1/2, 1/2, 1 → AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    almost = np.zeros((SIZE, SIZE), bool)
    almost[0:4, 0:5] = True
    almost[3, 4] = False
    truth = {"a": _truth({1: [0], 2: [0]})}
    submission = _submission({"a": [(0, 0.9, CELL_1), (0, 0.8, encode_mask(almost)), (0, 0.7, CELL_2)]})
    assert score_submission(submission, truth).mean == pytest.approx(5 / 6)
    # Listed the other way round, the higher confidence still takes the cell.
    submission = _submission({"a": [(0, 0.7, CELL_2), (0, 0.8, encode_mask(almost)), (0, 0.9, CELL_1)]})
    assert score_submission(submission, truth).mean == pytest.approx(5 / 6)


def test_match_needs_the_same_class() -> None:
    # Class 0: its only truth cell is cell 2; the class-0 prediction on cell 1 (which carries class
    # 3) is a FP ranked first → P = 0, 1/2, R = 0, 1 → AP 1/2. Class 3: perfect.
    truth = {"a": _truth({1: [3], 2: [0]})}
    submission = _submission({"a": [(0, 0.9, CELL_1), (0, 0.8, CELL_2), (3, 0.9, CELL_1)]})
    result = score_submission(submission, truth)
    assert result.per_class[0].ap == pytest.approx(0.5)
    assert result.per_class[3].ap == 1.0
    assert result.mean == pytest.approx(0.75)


def test_class_without_truth_is_left_out_of_the_mean() -> None:
    truth = {"a": _truth({1: [0], 2: [0]})}
    submission = _submission({"a": [(0, 0.9, CELL_1), (0, 0.9, CELL_2), (7, 0.9, CELL_1)]})
    result = score_submission(submission, truth)
    assert list(result.scored) == [0]
    assert math.isnan(result.per_class[7].ap) and result.per_class[7].n_pred == 0  # ignored: not in a
    assert result.mean == 1.0


def test_class_with_truth_but_no_predictions_scores_zero() -> None:
    truth = {"a": _truth({1: [0], 2: [1]})}
    result = score_submission(_submission({"a": [(0, 0.9, CELL_1)]}), truth)
    assert result.per_class[1].ap == 0.0
    assert result.mean == 0.5


def test_ranking_runs_across_images() -> None:
    # Image a: cell 1 of class 0; image b: cell 2 of class 0 (and a cell 1 without class 0).
    # b's CELL_1 mask 0.95 is a FP (in b, cell 1 does not carry class 0; a's cell 1 is in another
    # image); a's CELL_1 0.9 a TP; b's CELL_2 0.5 a TP: P = 0, 1/2, 2/3 → AP = 2/3.
    truth = {"a": _truth({1: [0]}), "b": _truth({1: [4], 2: [0]})}
    submission = _submission({"a": [(0, 0.9, CELL_1)],
                              "b": [(0, 0.95, CELL_1), (0, 0.5, CELL_2)]})
    result = score_submission(submission, truth)
    assert result.per_class[0].ap == pytest.approx(2 / 3)
    assert result.per_class[0].n_truth == 2 and result.per_class[0].n_pred == 3


def test_average_precision_by_hand() -> None:
    # TP, FP, TP, FP, TP against 4 truth: P = 1, 1/2, 2/3, 1/2, 3/5; steps of 1/4 at ranks 1, 3, 5
    # → AP = (1 + 2/3 + 3/5) / 4 = 0.5667.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    is_tp = np.array([True, False, True, False, True])
    assert average_precision(scores, is_tp, 4) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    # The same predictions listed in another order give the same AP.
    assert average_precision(scores[::-1], is_tp[::-1], 4) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert average_precision(np.array([]), np.array([], bool), 3) == 0.0
    assert math.isnan(average_precision(scores, is_tp, 0))


def test_pycocotools_iou_agrees_with_iou_matrix() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (20, 30)).astype(np.uint16)
    pred = rng.integers(0, 4, (20, 30)).astype(np.uint16)
    truth_ids, pred_ids, expected = iou_matrix(truth, pred)
    truth_rles, pred_rles = (TruthImage.from_labels(x, {int(i): [0] for i in ids}).masks
                             for x, ids in ((truth, truth_ids), (pred, pred_ids)))
    iou = coco_mask.iou(list(pred_rles.values()), list(truth_rles.values()), [0] * len(truth_rles))
    np.testing.assert_allclose(iou.T, expected)


def test_unscorable_submissions_are_input_errors() -> None:
    truth = {"a": _truth({1: [0]})}
    with pytest.raises(InputError, match="submission image z is not in the truth"):
        score_submission(_submission({"z": []}), truth)
    wrong_size = _submission({"a": [(0, 1.0, CELL_1)]}).assign(ImageWidth=12)
    with pytest.raises(InputError, match="a: size 12x10 differs from the truth's 10x10"):
        score_submission(wrong_size, truth)
    with pytest.raises(InputError, match="a: mask 'AAAA'.*zlib"):
        score_submission(_submission({"a": [(0, 1.0, "AAAA")]}), truth)
    with pytest.raises(InputError, match="a: 2 fields"):
        score_submission(_submission({"a": []}).assign(PredictionString="0 1"), truth)


def truth_submission(folder: Path) -> list[SubmissionRow]:
    """Submission rows that predict a synthetic set's truth (``folder/truth``) exactly: each cell's
    classes at confidence 1, the others at 0."""
    cells = pd.read_csv(folder / "truth" / "cells.csv", dtype={"ID": str, "Label": str},
                        keep_default_na=False)
    rows = []
    for image_id, group in cells.groupby("ID"):
        labels = read_label_image(folder / "truth" / f"{image_id}.png")
        masks = encode_cells(labels)
        scores = np.zeros((len(masks), 19))
        row_of = {cell: k for k, cell in enumerate(masks)}
        for mask_id, label in zip(group["mask_id"], group["Label"]):
            scores[row_of[int(mask_id)], parse_labels(label)] = 1.0
        rows.append((image_id, labels.shape[1], labels.shape[0],
                     prediction_string(list(masks.values()), scores)))
    return rows


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    result = run_script("-m", "hpasc.commands.synthetic", "-o", folder, "-n", 3, "--size", 256, "--seed", 2,
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    return folder


def test_end_to_end_truth_as_submission_scores_one(synthetic, tmp_path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, truth_submission(synthetic))
    result = run_script("-m", "hpasc.commands.evaluate", "--submission", path, "--truth", synthetic / "truth",
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "mAP: 1.0000"
    assert len([line for line in lines if "left out of the mean" in line]) >= 1
    # every cell lists all 19 classes: those of classes its image lacks are ignored, and said so
    assert len(lines) == 1 + 19 + 3 and lines[-3].startswith("ignored predictions: ")
    assert "(class not in the image)" in lines[-3]


def test_end_to_end_missing_image_lowers_the_score(synthetic, tmp_path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, truth_submission(synthetic)[1:])
    result = run_script("-m", "hpasc.commands.evaluate", "--submission", path, "--truth", synthetic / "truth",
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "1 truth image(s) have no submission row" in result.stderr
    assert 0 < float(result.stdout.splitlines()[-1].split()[1]) < 1


def test_cli_one_line_errors(synthetic, tmp_path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, [*truth_submission(synthetic), ("stranger", 256, 256, "")])
    result = run_script("-m", "hpasc.commands.evaluate", "--submission", path, "--truth", synthetic / "truth")
    assert_one_line_error(result, "stranger", "not in the truth")
    result = run_script("-m", "hpasc.commands.evaluate", "--submission", tmp_path / "absent.csv",
                        "--truth", synthetic / "truth")
    assert_one_line_error(result, "absent.csv")


def test_read_truth_names_the_bad_row(tmp_path) -> None:
    write_label_image(tmp_path / "img.png", _two_cells())
    table = tmp_path / "cells.csv"
    table.write_text("ID,mask_id,Label\nimg,1,0|3\nimg,2,\n")
    truth = read_truth(tmp_path)
    assert truth["img"].classes == {1: (0, 3), 2: ()}
    assert text_to_rle(CELL_1, SIZE, SIZE) == truth["img"].masks[1]
    for body, message in (("img,1,0\nimg,5,0\n", "cells.csv line 3: mask_id 5 is not a cell"),
                          ("img,1,0\nother,1,0\n", "cells.csv line 3: no label image other.png"),
                          ("img,1,0\nimg,1,2\n", "cells.csv line 3: cell 1 of img already listed on line 2"),
                          ("img,1,25\n", "cells.csv line 2: bad Label '25'"),
                          ("img,x,0\n", "cells.csv line 2: mask_id 'x'")):
        table.write_text("ID,mask_id,Label\n" + body)
        with pytest.raises(InputError, match=message):
            read_truth(tmp_path)


# The Open Images challenge rules (the competition's): what is ignored rather than counted.

def test_a_class_absent_from_the_image_is_ignored_not_a_false_positive() -> None:
    # Image a carries only class 0. A class-7 prediction there is ignored; in image b, which has a
    # class-7 cell, the same kind of prediction on the other cell is a false positive.
    truth = {"a": _truth({1: [0], 2: [0]}), "b": _truth({1: [7], 2: [4]})}
    submission = _submission({"a": [(0, 0.9, CELL_1), (0, 0.8, CELL_2), (7, 0.99, CELL_1)],
                              "b": [(7, 0.5, CELL_1), (7, 0.95, CELL_2), (4, 0.9, CELL_2)]})
    result = score_submission(submission, truth)
    assert result.per_class[7].n_pred == 2  # a's class-7 prediction is not counted
    assert result.per_class[7].ap == pytest.approx(0.5)  # FP 0.95 (b's cell 2), TP 0.5: P@2 = 1/2
    assert result.ignored == {"class not in the image": 1, "empty mask": 0, "NaN confidence": 0}
    strict = score_submission(submission, truth, rules="strict")  # every prediction counts
    assert strict.per_class[7].n_pred == 3 and strict.per_class[7].ap == pytest.approx(1 / 3)


def test_an_empty_mask_is_dropped() -> None:
    # An empty mask at 0.95 would be a FP ranked first (AP 1/2); dropped, AP is 1.
    empty = encode_mask(np.zeros((SIZE, SIZE), bool))
    truth = {"a": _truth({1: [0]})}
    submission = _submission({"a": [(0, 0.95, empty), (0, 0.9, CELL_1)]})
    assert score_submission(submission, truth).mean == 1.0
    assert score_submission(submission, truth).ignored["empty mask"] == 1
    assert score_submission(submission, truth, rules="strict").mean == pytest.approx(0.5)


def test_a_nan_confidence_is_dropped() -> None:
    truth = {"a": _truth({1: [0], 2: [0]})}
    submission = _submission({"a": [(0, float("nan"), ELSEWHERE), (0, 0.9, CELL_1), (0, 0.8, CELL_2)]})
    result = score_submission(submission, truth)
    assert result.mean == 1.0 and result.per_class[0].n_pred == 2 and result.ignored["NaN confidence"] == 1


def test_ties_rank_in_image_order_then_listing_order() -> None:
    # Equal confidences: image a before b, and within an image the PredictionString's order.
    # a: FP (ELSEWHERE) listed before the TP; b: TP. Ranked FP, TP, TP → P = 0, 1/2, 2/3 → AP 2/3.
    truth = {"a": _truth({1: [0]}), "b": _truth({2: [0]})}
    submission = _submission({"b": [(0, 0.5, CELL_2)], "a": [(0, 0.5, ELSEWHERE), (0, 0.5, CELL_1)]})
    assert score_submission(submission, truth).mean == pytest.approx(2 / 3)
    # The TP listed first in a: TP, FP, TP → P = 1, 1/2, 2/3 → AP 5/6.
    submission = _submission({"a": [(0, 0.5, CELL_1), (0, 0.5, ELSEWHERE)], "b": [(0, 0.5, CELL_2)]})
    assert score_submission(submission, truth).mean == pytest.approx(5 / 6)


def test_hpa_style_mask_folder_with_a_cell_label_csv(tmp_path: Path, hpa_real: Path) -> None:
    """--truth-suffix _cellmask + --truth-labels: the real samples' masks as the truth."""
    image_id = "5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0"
    labels = read_label_image(hpa_real / "masks" / f"{image_id}_cellmask.png")
    masks = encode_cells(labels)
    cells = list(masks)
    (tmp_path / "cell_labels.csv").write_text("ID,mask_id,Label\n" + "".join(
        f"{image_id},{m},{'8|5' if k % 2 else '0'}\n" for k, m in enumerate(cells)))
    scores = np.zeros((len(cells), 19))
    for k in range(len(cells)):
        scores[k, [8, 5] if k % 2 else [0]] = 1.0
    path = tmp_path / "submission.csv"
    write_submission(path, [(image_id, labels.shape[1], labels.shape[0],
                             prediction_string(list(masks.values()), scores))])
    result = run_script("-m", "hpasc.commands.evaluate", "--submission", path, "--truth", hpa_real / "masks",
                        "--truth-suffix", "_cellmask", "--truth-labels", tmp_path / "cell_labels.csv",
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "mAP: 1.0000"
    assert "3 truth image(s) have no submission row" in result.stderr  # the other three masks
    missing = run_script("-m", "hpasc.commands.evaluate", "--submission", path, "--truth", hpa_real / "masks",
                         "--truth-suffix", "_cellmask")
    assert_one_line_error(missing, "cells.csv")
