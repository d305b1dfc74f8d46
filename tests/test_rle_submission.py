"""The mask encoding (hpasc.submission.rle) and the submission rows (hpasc.submission.rows).

Speed (this machine, 3072² label image with 100 ellipse cells of 60-200 px radii): encode_cells
about 70 ms; encode_mask(labels == id) for each cell about 4 s. The speed test below allows 2 s.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask
from scipy import ndimage

from hpasc.core.errors import InputError
from hpasc.submission import rle
from hpasc.submission.rows import (parse_prediction_string, prediction_string, read_sample_submission, read_submission,
                                   write_submission)
from tests.conftest import HPA_REAL

# Kaggle's sample submission: the empty mask of a 2048² and of a 3072² image.
EMPTY_2048, EMPTY_3072 = "eNoLCAgIMAEABJkBdQ==", "eNoLCAgIsAQABJ4Beg=="


def test_encode_mask_matches_kaggle_sample_strings() -> None:
    assert rle.encode_mask(np.zeros((2048, 2048), bool)) == EMPTY_2048
    assert rle.encode_mask(np.zeros((3072, 3072), np.uint8)) == EMPTY_3072


def test_round_trip_and_runs_agree() -> None:
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:5] = True
    mask[0, 6] = True
    text = rle.encode_mask(mask)
    np.testing.assert_array_equal(rle.decode_mask(text, 5, 7), mask)
    # The runs alternate zeros and ones down the columns.
    runs = rle.run_lengths(rle.text_to_rle(text, 5, 7)["counts"])
    by_columns = np.repeat(np.arange(len(runs)) % 2, runs).reshape(7, 5).T
    np.testing.assert_array_equal(by_columns.astype(bool), mask)


def test_run_lengths_by_hand() -> None:
    # 4x5 mask, ones at rows 1-2 of columns 1-3: column-major runs 5 zeros, then (2 ones, 2 zeros)
    # three times, then 3 more zeros → 5 2 2 2 2 2 5.
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 1
    counts = coco_mask.encode(np.asfortranarray(mask[:, :, None]))[0]["counts"]
    np.testing.assert_array_equal(rle.run_lengths(counts), [5, 2, 2, 2, 2, 2, 5])


def test_run_lengths_reads_big_and_delta_coded_numbers() -> None:
    runs = [0, 70000, 3, 1, 123456, 7, 5000000]
    counts = coco_mask.frPyObjects({"size": [sum(runs), 1], "counts": runs}, sum(runs), 1)["counts"]
    np.testing.assert_array_equal(rle.run_lengths(counts), runs)


def _random_labels(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    labels = rng.integers(0, 4, (height, width)).astype(np.uint16)
    labels[labels == 3] = 0
    return labels


def test_encode_cells_equals_encode_mask_per_cell() -> None:
    rng = np.random.default_rng(0)
    cases = [_random_labels(rng, *rng.integers(1, 13, 2)) for _ in range(200)]
    # A cell filling everything; one running from a column's bottom into the next column's top
    # (one run in the full image, two in its box); one on the last pixel.
    seam = np.zeros((6, 4), np.uint16)
    seam[4:, 1] = seam[:2, 2] = 5
    seam[-1, -1] = 2
    cases += [np.full((3, 4), 7, np.uint16), seam]
    for labels in cases:
        encoded = rle.encode_cells(labels)
        assert sorted(encoded) == sorted(set(np.unique(labels)) - {0})
        boxes = {i + 1: box for i, box in enumerate(ndimage.find_objects(labels)) if box is not None}
        assert rle.encode_cells(labels, None, boxes) == encoded  # the caller's boxes: the same strings
        for cell, text in encoded.items():
            assert text == rle.encode_mask(labels == cell)
            np.testing.assert_array_equal(rle.decode_mask(text, *labels.shape), labels == cell)


def test_encode_cells_selected_ids() -> None:
    labels = np.array([[0, 1, 1], [4, 4, 0]], np.uint16)
    assert list(rle.encode_cells(labels, [4])) == [4]
    assert rle.encode_cells(np.zeros((3, 3), np.uint16)) == {}
    with pytest.raises(ValueError, match="2"):
        rle.encode_cells(labels, [1, 2])


def test_encode_cells_is_fast_on_a_full_size_image() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((3072, 3072), np.uint16)
    for cell in range(1, 101):
        cy, cx = (int(v) for v in rng.integers(0, 3072, 2))
        axes = tuple(int(v) for v in rng.integers(60, 200, 2))
        cv2.ellipse(labels, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, cell, -1)
    start = time.perf_counter()
    encoded = rle.encode_cells(labels)
    assert time.perf_counter() - start < 2.0
    some = sorted(encoded)[::25]
    for cell in some:
        assert encoded[cell] == rle.encode_mask(labels == cell)


@pytest.mark.parametrize("text, reason", [
    ("not base64!", "base64"),
    ("aGVsbG8=", "zlib"),
    (rle.rle_to_text({"counts": b"5 2"}), "alphabet"),
    (rle.rle_to_text({"counts": b"5\\"}), "cut off"),
    (rle.rle_to_text({"counts": b""}), "no run"),
    (rle.rle_to_text({"counts": b"5220"}), "runs cover 11 pixels, not 5x4"),
    (rle.rle_to_text({"counts": b"52200031"}), "runs cover"),
    (rle.rle_to_text({"counts": b"5@"}), "negative"),
    (rle.rle_to_text({"counts": b"oooooooo0"}), "too long"),
    (EMPTY_2048, "runs cover"),
])
def test_decode_refuses_malformed_strings(text: str, reason: str) -> None:
    rle.decode_mask(rle.rle_to_text({"counts": b"5220003"}), 4, 5)  # the valid original
    with pytest.raises(ValueError, match=reason):
        rle.decode_mask(text, 4, 5)


def test_prediction_string_format_and_parse() -> None:
    scores = np.zeros((2, 19))
    scores[0, 3] = 0.25
    scores[1, 18] = 1.0
    scores[1, 0] = 3.14159265e-5
    text = prediction_string(["AAA", "BBB"], scores)
    tokens = text.split(" ")
    assert len(tokens) == 2 * 19 * 3
    assert tokens[:6] == ["0", "0", "AAA", "1", "0", "AAA"]
    assert tokens[9:12] == ["3", "0.25", "AAA"]
    assert tokens[57:60] == ["0", "3.14159e-05", "BBB"]
    assert tokens[-3:] == ["18", "1", "BBB"]
    parsed = parse_prediction_string(text)
    assert parsed[3] == (3, 0.25, "AAA") and parsed[-1] == (18, 1.0, "BBB")
    assert prediction_string([], np.zeros((0, 19))) == "" and parse_prediction_string("") == []


def test_prediction_string_refuses_bad_scores() -> None:
    with pytest.raises(ValueError, match="2 x 19"):
        prediction_string(["A", "B"], np.zeros((2, 18)))
    with pytest.raises(ValueError, match="finite"):
        prediction_string(["A"], np.full((1, 19), np.nan))


@pytest.mark.parametrize("text, reason", [
    ("0 1", "multiple of 3"),
    ("19 1 AAA", "class '19'"),
    ("-1 1 AAA", "class '-1'"),
    ("0 1 AAA 2 high AAA", "triplet 2: confidence 'high'"),
])
def test_parse_prediction_string_refuses_malformed(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_prediction_string(text)


def test_write_submission_in_sample_order(tmp_path) -> None:
    path = tmp_path / "submission.csv"
    rows = [("b", 4, 3, "0 1 X"), ("a", 2, 2, "")]
    write_submission(path, rows, order=["a", "b"])
    assert path.read_text() == "ID,ImageWidth,ImageHeight,PredictionString\na,2,2,\nb,4,3,0 1 X\n"
    table = read_submission(path)
    assert table["PredictionString"].tolist() == ["", "0 1 X"]
    assert table["ImageWidth"].tolist() == [2, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_write_submission_refuses_rows_that_do_not_match_the_order(tmp_path) -> None:
    path = tmp_path / "submission.csv"
    with pytest.raises(InputError, match="no prediction for image c"):
        write_submission(path, [("a", 1, 1, "")], order=["a", "c"])
    with pytest.raises(InputError, match="image z is not in the sample submission"):
        write_submission(path, [("a", 1, 1, ""), ("z", 1, 1, "")], order=["a"])
    with pytest.raises(InputError, match="two rows for image a"):
        write_submission(path, [("a", 1, 1, ""), ("a", 1, 1, "")])
    assert not path.exists()


def test_real_sample_submission_parses(hpa_real) -> None:
    sample = read_sample_submission(HPA_REAL / "sample_submission.csv")
    ids = sample.order
    assert len(ids) == 559 and len(set(ids)) == 559 and len(sample.sizes) == 559
    assert ids[0] == "0040581b-f1f2-4fbe-b043-b6bfea5404bb"
    table = read_submission(HPA_REAL / "sample_submission.csv")
    first = table.iloc[0]
    assert parse_prediction_string(first["PredictionString"]) == [(0, 1.0, EMPTY_2048)]
    assert not rle.decode_mask(EMPTY_2048, first["ImageHeight"], first["ImageWidth"]).any()


def test_reading_refuses_unusable_tables(tmp_path) -> None:
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("Image,X\na,1\n")
    with pytest.raises(InputError, match="no_id.csv: no ID column"):
        read_sample_submission(no_id)
    twice = tmp_path / "twice.csv"
    twice.write_text("ID\na\nb\na\n")
    with pytest.raises(InputError, match="twice.csv line 4: image a appears twice"):
        read_sample_submission(twice)
    assert read_sample_submission(_table(tmp_path, "ID\nb\na\n")).order == ["b", "a"]
    with pytest.raises(InputError, match="line 3: ImageHeight 'x' is not an integer"):
        read_sample_submission(_table(tmp_path, "ID,ImageWidth,ImageHeight\na,1,1\nb,2,x\n"))
    with pytest.raises(InputError, match="missing column.*PredictionString"):
        read_submission(_table(tmp_path, "ID,ImageWidth,ImageHeight\n"))
    with pytest.raises(InputError, match="line 3: ImageHeight 'tall'"):
        read_submission(_table(tmp_path, "ID,ImageWidth,ImageHeight,PredictionString\na,1,1,\nb,1,tall,\n"))
    with pytest.raises(InputError, match="does not exist"):
        read_submission(tmp_path / "absent.csv")


def _table(folder, text: str):
    path = folder / "table.csv"
    path.write_text(text)
    return path


def test_read_submission_keeps_ids_as_text(tmp_path) -> None:
    table = read_submission(_table(tmp_path, "ID,ImageWidth,ImageHeight,PredictionString\n007,5,6,\n"))
    assert table["ID"].tolist() == ["007"]
    assert isinstance(table, pd.DataFrame)
