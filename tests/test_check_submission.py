"""The submission checker (hpasc.submission.check): a valid submission passes, and each kind of
problem is found in a small submission broken in that one way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpasc.core.errors import InputError
from hpasc.core.images import write_channel
from hpasc.submission.check import check_submission, read_image_sizes
from hpasc.submission.rle import encode_cells, encode_mask
from hpasc.submission.rows import COLUMNS, prediction_string, read_submission, write_submission
from tests.conftest import assert_one_line_error, run_script
from tests.test_evaluate import truth_submission

WIDTH, HEIGHT = 8, 6


def _labels() -> np.ndarray:
    """An 8 wide, 6 high image with two cells."""
    labels = np.zeros((HEIGHT, WIDTH), np.uint16)
    labels[0:3, 0:3] = 1
    labels[3:6, 4:8] = 2
    return labels


MASKS = list(encode_cells(_labels()).values())


def _table(prediction: str, image_id: str = "img", width: int = WIDTH, height: int = HEIGHT
           ) -> pd.DataFrame:
    return pd.DataFrame([(image_id, width, height, prediction)], columns=list(COLUMNS))


def _valid() -> str:
    return prediction_string(MASKS, np.full((2, 19), 0.5))


def _problems(prediction: str, **kwargs) -> list[str]:
    return check_submission(_table(prediction), **kwargs)


def test_small_valid_submission_passes() -> None:
    assert _problems(_valid()) == []
    assert _problems(_valid(), image_sizes={"img": (WIDTH, HEIGHT)}, order=["img"]) == []
    assert check_submission(_table("")) == []  # an image without cells


def test_wrong_size_is_found() -> None:
    [problem] = _problems(_valid(), image_sizes={"img": (WIDTH, HEIGHT + 1)})
    assert problem == "line 2 (img): size 8x6 differs from the image's 8x7"
    [problem] = check_submission(_table("", width=0))
    assert "image size 0x6 is not positive" in problem


def test_missing_class_is_found() -> None:
    triplets = _valid().split(" ")
    del triplets[5 * 3:6 * 3]  # class 5 of the first cell
    assert _problems(" ".join(triplets)) == [
        "line 2 (img): cell 1 (triplet 1) has no triplet for class(es) 5"]


def test_repeated_class_is_found() -> None:
    triplets = _valid().split(" ")
    triplets[5 * 3] = "4"  # class 5 of the first cell listed as a second class 4
    assert _problems(" ".join(triplets)) == [
        "line 2 (img): cell 1 (triplet 1) has no triplet for class(es) 5",
        "line 2 (img): cell 1 (triplet 1) has class 4 2 times"]


def test_differing_masks_of_one_cell_are_found() -> None:
    smaller = _labels() == 1
    smaller[2, 2] = False
    triplets = _valid().split(" ")
    triplets[7 * 3 + 2] = encode_mask(smaller)  # class 7 of the first cell
    problems = _problems(" ".join(triplets))
    # The odd mask is the second distinct one, at triplet 8; the second real cell comes third.
    assert problems == ["line 2 (img): cell 1 (triplet 1) has no triplet for class(es) 7",
                        "line 2 (img): cell 2 (triplet 8) has no triplet for class(es) 0-6, 8-18",
                        "line 2 (img): cell 1 (triplet 1) and cell 2 (triplet 8) overlap (IoU 0.89): "
                        "one cell with differing mask strings?"]


def test_overlapping_cells_are_found() -> None:
    bigger = _labels() == 2
    bigger[2, 0:5] = True  # reaches into cell 1: 3 px shared
    text = prediction_string([MASKS[0], encode_mask(bigger)], np.zeros((2, 19)))
    [problem] = _problems(text)
    assert problem.startswith("line 2 (img): cell 1 (triplet 1) and cell 2 (triplet 20) overlap (IoU 0.")
    assert "differing" not in problem


def test_confidence_outside_range_is_found() -> None:
    scores = np.full((2, 19), 0.5)
    scores[1, 3] = 1.5
    scores[0, 2] = -0.25
    [problem] = _problems(prediction_string(MASKS, scores))
    assert problem == "line 2 (img): 2 confidence(s) outside [0, 1], first -0.25 (triplet 3, class 2)"


def test_malformed_masks_are_found() -> None:
    problems = _problems(prediction_string(["AAAA", MASKS[1]], np.zeros((2, 19))))
    assert problems == ["line 2 (img): cell 1 (triplet 1): mask is not a valid 8x6 RLE "
                        "(not zlib-compressed data)"]
    too_big = encode_mask(np.zeros((HEIGHT, WIDTH + 1), bool))
    [problem] = _problems(prediction_string([too_big], np.zeros((1, 19))))
    assert "runs cover 54 pixels, not 8x6 = 48" in problem
    [problem] = _problems("0 0.5")
    assert problem == "line 2 (img): PredictionString: 2 fields, not a multiple of 3 (class confidence mask)"


def test_empty_mask_is_found() -> None:
    empty = encode_mask(np.zeros((HEIGHT, WIDTH), bool))
    assert _problems(prediction_string([empty], np.zeros((1, 19)))) == \
        ["line 2 (img): cell 1 (triplet 1) has an empty mask"]


def test_order_and_coverage_against_the_sample() -> None:
    table = pd.concat([_table("", "b"), _table("", "a")], ignore_index=True)
    assert check_submission(table, order=["a", "b"]) == \
        ["rows are not in the sample submission's order: line 2 is b, expected a"]
    assert check_submission(table, order=["a", "b", "c"]) == \
        ["1 image(s) of the sample submission without a row, first c"]
    assert check_submission(table, order=["b"]) == ["1 image(s) not in the sample submission, first a"]
    assert check_submission(table, image_sizes={"a": (WIDTH, HEIGHT)}) == \
        ["1 image(s) not in the image folder, first b"]


def test_table_shape_problems_are_found() -> None:
    table = pd.concat([_table(""), _table("")], ignore_index=True)
    assert check_submission(table) == ["image img has 2 rows"]
    assert check_submission(table, order=["img"]) == ["image img has 2 rows"]
    reordered = _table("")[["ID", "ImageHeight", "ImageWidth", "PredictionString"]]
    assert check_submission(reordered) == \
        ["columns are ID,ImageHeight,ImageWidth,PredictionString, expected "
         "ID,ImageWidth,ImageHeight,PredictionString"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    result = run_script("-m", "hpasc.commands.synthetic", "-o", folder, "-n", 3, "--size", "200x256",
                        "--seed", 2, "--no-progress")
    assert result.returncode == 0, result.stderr
    return folder


def test_submission_built_from_synthetic_truth_passes(synthetic, tmp_path) -> None:
    rows = truth_submission(synthetic)
    path, sample = tmp_path / "submission.csv", tmp_path / "sample.csv"
    write_submission(path, rows)
    sample.write_text("ID\n" + "".join(f"{row[0]}\n" for row in rows))
    sizes = read_image_sizes(synthetic)
    assert set(sizes.values()) == {(256, 200)}
    assert check_submission(read_submission(path), sizes, [row[0] for row in rows]) == []
    result = run_script("-m", "hpasc.commands.check_submission", path, "--images", synthetic,
                        "--sample-submission", sample, "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    cells = sum(len(row[3].split()) // 57 for row in rows)
    assert result.stdout.splitlines()[-1] == f"{path}: 3 image(s), {cells} cell(s), 0 problem(s)"


def test_cli_prints_at_most_20_problems(tmp_path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, [(f"img{k}", WIDTH, HEIGHT, "0 1.5 AAAA") for k in range(15)])
    result = run_script("-m", "hpasc.commands.check_submission", path, "--no-progress")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # Each row has three problems: confidence, 18 classes missing, malformed mask.
    assert len(lines) == 22
    assert lines[-2] == "... and 25 more problem(s)"
    assert lines[-1] == f"{path}: 15 image(s), 15 cell(s), 45 problem(s)"


def test_cli_unusable_input_is_a_one_line_error(tmp_path) -> None:
    assert_one_line_error(run_script("-m", "hpasc.commands.check_submission", tmp_path / "absent.csv"),
                          "absent.csv", "does not exist")
    path = tmp_path / "submission.csv"
    write_submission(path, [])
    assert_one_line_error(run_script("-m", "hpasc.commands.check_submission", path, "--sample-submission",
                                     tmp_path / "nosample.csv"), "nosample.csv")


@pytest.mark.parametrize("extension", [".png", ".tif", ".tif.gz", ".jpg"])
def test_image_sizes_from_each_format(tmp_path, extension: str) -> None:
    plane = np.zeros((5, 7), np.uint16)
    for channel in ("red", "green", "blue", "yellow"):
        write_channel(tmp_path / f"x_{channel}{extension}", plane)
    assert read_image_sizes(tmp_path) == {"x": (7, 5)}


def test_unreadable_image_header_is_an_input_error(tmp_path) -> None:
    for channel in ("red", "green", "blue", "yellow"):
        (tmp_path / f"x_{channel}.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="x_red.tif: cannot read the image size"):
        read_image_sizes(tmp_path)
