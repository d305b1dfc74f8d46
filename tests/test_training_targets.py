"""Soft targets: label folders (manual scores and pseudo labels), merging, the target matrix."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from hpasc.core.errors import InputError
from hpasc.labels.folders import (DEFAULT_SCORE_MAP, ScoreMap, format_soft, merge_label_sets, read_label_folder,
                                  read_score_map, write_label_folder)
from hpasc.stages.train.targets import build_targets
from tests.conftest import SAMPLE_LABELS

IMAGE = "5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0"


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_scores_map_to_soft_labels_and_the_last_listing_wins(tmp_path: Path) -> None:
    write(tmp_path, "8.txt", f"{IMAGE}_0 1\n{IMAGE}_1 2\n\n{IMAGE}_2 3\n   \n{IMAGE}_3 4\n{IMAGE}_4 5\n"
                             f"{IMAGE}_0 4\n")
    write(tmp_path, "11.txt", f"{IMAGE}_0 0.99\n{IMAGE}_1\t0.01\n")
    labels = read_label_folder(tmp_path)
    assert list(labels) == [8, 11]
    assert labels[8] == {f"{IMAGE}_0": 0.9, f"{IMAGE}_1": 0.2, f"{IMAGE}_2": 0.7, f"{IMAGE}_3": 0.9,
                         f"{IMAGE}_4": 1.0}
    assert labels[11] == {f"{IMAGE}_0": 0.99, f"{IMAGE}_1": 0.01}


def test_per_class_score_map_overrides_only_the_scores_it_names(tmp_path: Path) -> None:
    config = write(tmp_path, "scores.yaml", "default: {2: 0.3}\nclasses: {11: {3: 0.8}}\n")
    score_map = read_score_map(config)
    assert [score_map.soft(11, s) for s in range(1, 6)] == [0.0, 0.3, 0.8, 0.9, 1.0]
    assert [score_map.soft(8, s) for s in range(1, 6)] == [0.0, 0.3, 0.7, 0.9, 1.0]
    write(tmp_path / "labels", "11.txt", "a_1 3\n")
    write(tmp_path / "labels", "8.txt", "a_1 3\n")
    assert read_label_folder(tmp_path / "labels", score_map) == {8: {"a_1": 0.7}, 11: {"a_1": 0.8}}
    assert read_score_map(write(tmp_path, "empty.yaml", "")) == ScoreMap()
    assert dict(ScoreMap().default) == DEFAULT_SCORE_MAP


@pytest.mark.parametrize("text, problem", [
    ("default: {6: 0.5}\n", "6"),
    ("default: {3: 1.5}\n", "1.5"),
    ("default: {3: yes}\n", "True"),
    ("classes: {19: {3: 0.5}}\n", "19"),
    ("classes: {11: 0.5}\n", "class 11"),
    ("scores: {3: 0.5}\n", "scores"),
    ("- 1\n", "mapping"),
    ("default: {3: [\n", "YAML"),
])
def test_bad_score_maps_are_input_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "scores.yaml", text)
    with pytest.raises(InputError, match=str(path)) as error:
        read_score_map(path)
    assert problem in str(error.value)
    with pytest.raises(InputError, match="does not exist"):
        read_score_map(tmp_path / "missing.yaml")


@pytest.mark.parametrize("line", ["a_1 3 extra", "a_1", "a_1 6", "a_1 -1", "a_1 1.5", "a_1 -0.1",
                                  "a_1 x", "a_1 nan", "a_1 inf"])
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "3.txt", f"a_0 2\n\n{line}\n")
    with pytest.raises(InputError, match=f"^{path}:3: "):
        read_label_folder(tmp_path)


def test_other_files_are_ignored_and_bad_classes_rejected(tmp_path: Path, caplog) -> None:
    write(tmp_path, "5.txt", "a_0 5\n")
    write(tmp_path, "notes.txt", "a misnamed label file?")
    write(tmp_path, "manifest.json", "{}")
    write(tmp_path, "5.p", "pickle")
    (tmp_path / "sub.txt").mkdir()
    with caplog.at_level(logging.WARNING):
        assert read_label_folder(tmp_path) == {5: {"a_0": 1.0}}
    # Only .txt files that are not label files are worth a warning; a manifest is not.
    assert caplog.text.count("ignoring") == 2 and "notes.txt" in caplog.text
    assert "manifest.json" not in caplog.text
    write(tmp_path, "19.txt", "a_0 5\n")
    with pytest.raises(InputError, match="19.txt: class 19 outside 0..18"):
        read_label_folder(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_label_folder(tmp_path / "missing")


def test_score_zero_is_a_score(tmp_path: Path) -> None:
    write(tmp_path, "3.txt", "a_0 0\na_1 1\n")  # SPEC: scores 0..5, as the 4th place's files use them
    assert read_label_folder(tmp_path) == {3: {"a_0": 0.0, "a_1": 0.0}}


def test_label_files_of_the_4th_places_format() -> None:
    labels = read_label_folder(SAMPLE_LABELS)  # their line format, cells of two real samples
    assert sorted(labels) == [8, 11]
    assert len(labels[8]) == 8 and len(labels[11]) == 10
    assert sorted(labels[8].values()) == [0.0] * 3 + [0.2] * 3 + [0.7] * 2
    assert labels[8]["5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0_0"] == 0.0
    assert labels[8]["5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0_1"] == 0.2
    assert labels[11]["b6a469d8-bbad-11e8-b2ba-ac1f6b6435d0_9"] == 1.0
    assert sum(labels[11].values()) == pytest.approx(4.0)


def test_later_sets_win() -> None:
    manual = {8: {"a_0": 0.2, "a_1": 1.0}, 11: {"a_0": 0.0}}
    pseudo = {8: {"a_1": 0.01, "b_0": 0.99}, 0: {"c_0": 0.99}}
    assert merge_label_sets([manual, pseudo]) == {0: {"c_0": 0.99}, 8: {"a_0": 0.2, "a_1": 0.01, "b_0": 0.99},
                                                  11: {"a_0": 0.0}}
    assert merge_label_sets([pseudo, manual])[8]["a_1"] == 1.0
    assert manual == {8: {"a_0": 0.2, "a_1": 1.0}, 11: {"a_0": 0.0}}


def test_build_targets_weak_labels_then_overrides() -> None:
    cells = ["a_0", "a_1", "b_0", "c_0"]
    image_labels = [[0, 11], [0, 11], [18], [2, 5]]
    overrides = {11: {"a_1": 0.2, "zz_9": 1.0}, 18: {"b_0": 0.01}, 0: {"c_0": 0.99}, 5: {"c_0": 0.0}}
    targets = build_targets(cells, image_labels, [0, 11, 18], overrides)
    assert targets.values.dtype == np.float32
    np.testing.assert_array_equal(targets.values, np.array(
        [[1, 1, 0], [1, 0.2, 0], [0, 0, 0.01], [0.99, 0, 0]], dtype=np.float32))
    assert targets.relabelled.tolist() == [[False] * 3, [False, True, False], [False, False, True],
                                           [True, False, False]]
    assert (targets.applied, targets.unknown) == (3, 1)  # class 5 is not an output: neither

    without_negative = build_targets(cells, image_labels, [11, 0], {})
    np.testing.assert_array_equal(without_negative.values, [[1, 1], [1, 1], [0, 0], [0, 0]])
    assert (without_negative.applied, without_negative.unknown) == (0, 0)
    with pytest.raises(ValueError, match="unique"):
        build_targets(["a_0", "a_0"], [[0], [0]], [0], {})


@pytest.mark.parametrize("value, text", [(0.01, "0.01"), (0.99, "0.99"), (1.0, "1.0"), (1, "1.0"),
                                         (0.0, "0.0"), (0.2, "0.2"), (1e-5, "0.00001")])
def test_format_soft_always_has_a_decimal_point(value: float, text: str) -> None:
    assert format_soft(value) == text


def test_written_folders_read_back_exactly(tmp_path: Path) -> None:
    labels = {11: {"b_1": 0.99, "a_0": 0.01, "a_2": 1 / 3, "c_0": 1.0, "c_1": 0.0, "d_0": 1e-7},
              0: {"x_0": float(np.float32(0.7))}, 4: {}}
    write_label_folder(tmp_path, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.txt", "11.txt", "4.txt"]
    assert (tmp_path / "11.txt").read_text().splitlines()[:3] == ["a_0 0.01", "a_2 0.3333333333333333",
                                                                   "b_1 0.99"]
    assert read_label_folder(tmp_path) == labels
    with pytest.raises(ValueError, match="outside"):
        write_label_folder(tmp_path, {3: {"a_0": 1.5}})
    with pytest.raises(ValueError, match="white space"):
        write_label_folder(tmp_path, {3: {"a_0\t": 0.5}})
    write_label_folder(tmp_path, {3: {"well A1_0": 0.5}})  # inner spaces read back
    assert read_label_folder(tmp_path)[3] == {"well A1_0": 0.5}
