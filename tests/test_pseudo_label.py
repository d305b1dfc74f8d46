"""Negative pseudo-labels and positive mining (hpasc.tools.pseudo_label): the rule on a hand-made table,
and ``python -m hpasc.commands.pseudo_label`` end to end on a small cut dataset with an untrained model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hpasc.cells.tile_spec import TileSpec
from hpasc.core.runtime import CommonOptions
from hpasc.labels.folders import read_label_folder
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint
from hpasc.models.registry import create_model
from hpasc.models.runner import ModelRunner
from hpasc.models.scoring import prepare_batch
from hpasc.models.spec import ModelSpec
from hpasc.cellstore.split import read_split
from hpasc.stages.train.data import load_cells
from hpasc.stages.train.predict import score_rows
from hpasc.tools.pseudo_label import PseudoRule, pseudo_labels
from tests.conftest import assert_one_line_error, run_script

TILE = 32
BATCH = 16
SPEC = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(TILE))


# One intra-op thread here as in the subprocesses (OMP_NUM_THREADS=1): the same arithmetic on
# both sides, so recomputed probabilities match the command's.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the rule ---------------------------------------------------------------------------------

CELLS = ["a_0", "a_1", "a_2", "b_0", "b_1", "c_0"]
IMAGE_LABELS = [[0, 11]] * 3 + [[5, 18]] * 2 + [[18]]


def hand_probabilities(dtype: type = np.float32) -> np.ndarray:
    """float32 as the model gives them by default; 0.5 (neither low nor high) unless set."""
    p = np.full((len(CELLS), 19), 0.5, dtype=dtype)
    p[0, [0, 11]] = 0.1, 0.95   # a_0: class 0 low -> negative; 11 is its image's label, no mining
    p[1, [0, 11, 5]] = 0.3, 0.05, 0.01  # a_1: 0 exactly at the cutoff -> kept; 11 low; 5 not a label
    p[2, [0, 11]] = 0.29, 0.5
    p[3, [5, 18, 11, 3]] = 0.2, 0.0, 0.9, 0.0  # b_0: 18 is never pseudo-labelled; 11 exactly at cutoff
    p[4, [5, 11]] = 0.6, 0.89
    p[5, [18, 11]] = 0.01, 0.99
    return p


def test_negatives_only_for_image_labels_below_the_cutoff_never_for_negative() -> None:
    result = pseudo_labels(CELLS, IMAGE_LABELS, hand_probabilities(), PseudoRule())
    expected = {c: {} for c in range(18)}
    expected[0] = {"a_0": 0.01, "a_2": 0.01}
    expected[5] = {"b_0": 0.01}
    expected[11] = {"a_1": 0.01}
    assert result.labels == expected
    summary = result.summary().set_index("class")
    assert list(summary.index) == list(range(18))
    assert summary.loc[0].tolist() == [2, 0, 3] and summary.loc[5].tolist() == [1, 0, 2]
    assert summary.loc[11].tolist() == [1, 0, 3] and summary.loc[3].tolist() == [0, 0, 0]
    # A model with its own Negative output scores class 18 too; still no pseudo-label for it.
    with_negative_head = pseudo_labels(CELLS, IMAGE_LABELS, hand_probabilities(), PseudoRule(), range(19))
    assert with_negative_head.labels == expected
    assert not with_negative_head.negative[:, 18].any() and not with_negative_head.considered[:, 18].any()


def test_mined_positives_only_outside_labelled_images_and_from_the_cutoff_up() -> None:
    rule = PseudoRule(negative_cutoff=0.3, negative_value=0.02, positive_class=11, positive_cutoff=0.9,
                      positive_value=0.97)
    labels = pseudo_labels(CELLS, IMAGE_LABELS, hand_probabilities(), rule).labels
    assert labels[11] == {"a_1": 0.02, "b_0": 0.97, "c_0": 0.97}  # not a_0 (0.95, but labelled 11)
    assert labels[0] == {"a_0": 0.02, "a_2": 0.02} and labels[5] == {"b_0": 0.02}
    assert all(not labels[c] for c in set(range(18)) - {0, 5, 11})
    summary = pseudo_labels(CELLS, IMAGE_LABELS, hand_probabilities(), rule).summary().set_index("class")
    assert summary.loc[11].tolist() == [1, 2, 6]  # every cell was looked at for class 11


def test_float64_cutoffs_meet_float32_probabilities_and_unscored_classes_are_left_alone() -> None:
    p = hand_probabilities()
    assert float(p[1, 0]) > 0.3 and float(p[3, 11]) < 0.9  # float32(0.3), float32(0.9) are not the decimals
    exact = pseudo_labels(CELLS, IMAGE_LABELS, hand_probabilities(np.float64), PseudoRule(positive_class=11))
    assert pseudo_labels(CELLS, IMAGE_LABELS, p, PseudoRule(positive_class=11)).labels == exact.labels
    assert "b_0" in exact.labels[11] and "a_1" not in exact.labels[0]
    # A model without an output for class 0 says nothing about it.
    partial = pseudo_labels(CELLS, IMAGE_LABELS, p, PseudoRule(), classes=[5, 11]).labels
    assert partial[0] == {} and partial[5] == {"b_0": 0.01} and partial[11] == {"a_1": 0.01}
    with pytest.raises(ValueError, match="not among the scored classes"):
        pseudo_labels(CELLS, IMAGE_LABELS, p, PseudoRule(positive_class=11), classes=[0, 5])
    with pytest.raises(ValueError, match="expected"):
        pseudo_labels(CELLS, IMAGE_LABELS, p[:, :18], PseudoRule())
    with pytest.raises(ValueError, match="expected"):
        pseudo_labels(CELLS[:5], IMAGE_LABELS, p[:5], PseudoRule())


@pytest.mark.parametrize("settings, message", [
    ({"positive_class": 18}, "positive class 18"), ({"positive_class": -1}, "positive class -1"),
    ({"negative_cutoff": 0.0}, "negative_cutoff"), ({"positive_cutoff": 1.0}, "positive_cutoff"),
    ({"negative_value": 1.5}, "negative_value"), ({"positive_value": -0.1}, "positive_value"),
])
def test_rule_refuses_impossible_settings(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PseudoRule(**settings)


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """10 synthetic images cut into 32 px tiles and split (data_loader.py's defaults)."""
    root = tmp_path_factory.mktemp("pseudo")
    synthetic, out = root / "SYN", root / "DS"
    for args in (("-m", "hpasc.commands.synthetic", "-o", synthetic, "-n", "10", "--size", "384", "--seed", "1"),
                 ("image_cutter.py", "-i", synthetic, "-m", synthetic / "truth", "-n",
                  synthetic / "truth" / "nuclei", "-o", out, "--size", str(TILE)),
                 ("data_loader.py", "-i", out)):
        result = run_script(*args, cwd=root)
        assert result.returncode == 0, result.stderr
    return out


def calibrate_batch_norm(model: nn.Module, tiles: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``tiles`` (one forward pass, no
    gradient step). A freshly initialised EfficientNet shrinks its signal block by block, so
    without this all cells would get the same scores and no cutoff could separate them."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average: after one batch, exactly its statistics
    model.train()
    with torch.no_grad():
        model(prepare_batch(tiles, SPEC, "cpu"))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


@pytest.fixture(scope="module")
def checkpoint(dataset: Path, tmp_path_factory) -> Path:
    torch.manual_seed(7)
    model = create_model(SPEC.arch, len(SPEC.outputs), SPEC.in_channels, TILE)
    cells = load_cells(read_split(dataset))
    calibrate_batch_norm(model, torch.from_numpy(np.stack([cells.tile(i) for i in range(0, len(cells), 3)])))
    path = tmp_path_factory.mktemp("models") / "b0-untrained-0.pt"
    save_checkpoint(path, make_checkpoint(model, SPEC, epoch=0, metrics=[], args={"loss": "bce"}))
    return path


def recompute(checkpoint: Path, dataset: Path, which: str) -> tuple[list[str], list[list[int]], np.ndarray]:
    """The chosen cells, their image labels and their probabilities, scored in this process."""
    split = read_split(dataset)
    cells = load_cells(split)
    keep = cells.table["keep"].to_numpy(bool)
    images = {"train": split.train_images, "validation": split.validation_images}
    rows = np.flatnonzero(keep) if which == "all" else \
        np.intersect1d(cells.rows_of_images(images[which]), np.flatnonzero(keep))
    options = CommonOptions(workers=0, progress=False)
    probabilities = score_rows(ModelRunner.load(checkpoint), cells, rows, BATCH, options)
    cell_ids, image_labels = cells.cell_ids, cells.image_labels
    return [cell_ids[i] for i in rows], [image_labels[i] for i in rows], probabilities


def between(values: np.ndarray, quantile: float) -> float:
    """A cutoff halfway between two neighbouring distinct values near ``quantile``: both sides hold
    cells, and none sits on the cutoff where rounding could tip it."""
    distinct = np.unique(values.astype(np.float64))
    k = min(int(quantile * len(distinct)), len(distinct) - 2)
    return float((distinct[k] + distinct[k + 1]) / 2)


def pseudo_label(*args: str | Path, cwd: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_script("-m", "hpasc.commands.pseudo_label", *args, cwd=cwd, env=env, timeout=180)


def test_command_writes_what_the_rule_gives(dataset: Path, checkpoint: Path, tmp_path: Path) -> None:
    cell_ids, image_labels, probabilities = recompute(checkpoint, dataset, "all")
    hot = np.zeros_like(probabilities, dtype=bool)
    for row, labels in enumerate(image_labels):
        hot[row, labels] = True
    hot[:, 18] = False
    assert hot[:, 11].any() and not hot[:, 11].all()  # some cells in images labelled 11, some not
    rule = PseudoRule(negative_cutoff=between(probabilities[hot], 0.5), positive_class=11,
                      positive_cutoff=between(probabilities[~hot[:, 11], 11], 0.8))
    expected = pseudo_labels(cell_ids, image_labels, probabilities, rule)

    out = tmp_path / "pseudo"
    common = ("--checkpoint", checkpoint, "--dataset", dataset, "--out", out, "-b", str(BATCH),
              "--workers", "1", "--device", "cpu", "--no-progress")
    result = pseudo_label(*common, "--cells", "all", "--negative-cutoff", repr(rule.negative_cutoff),
                          "--positive-class", "11", "--positive-cutoff", repr(rule.positive_cutoff),
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = read_label_folder(out)
    assert written == expected.labels
    negatives = sum(expected.negative.sum(axis=0))
    assert 0 < negatives < hot.sum()  # the cutoff really split the labelled (cell, class) pairs
    assert 0 < expected.positive[:, 11].sum() < (~hot[:, 11]).sum()
    assert {v for cells in written.values() for v in cells.values()} == {0.01, 0.99}
    assert all(line.split()[1] in ("0.01", "0.99") for line in (out / "11.txt").read_text().splitlines())
    summary = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(summary, expected.summary(), check_dtype=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "pseudo_label" and manifest["cells"] == len(cell_ids)
    assert manifest["negatives"] == negatives and manifest["arguments"]["positive_class"] == 11
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"INFO done: {len(cell_ids)} all cells scored: {negatives} negative pseudo-labels in "
        f"{int((expected.summary()['negatives'] > 0).sum())} classes, {expected.positive[:, 11].sum()} class-11 "
        f"positives; 0 failed; output in {out}")

    again = pseudo_label(*common, cwd=tmp_path)
    assert_one_line_error(again, str(out), "already holds label files", "--overwrite")
    assert read_label_folder(out) == expected.labels

    # --overwrite replaces every class file: no mined positive of the first run survives.
    cell_ids, image_labels, probabilities = recompute(checkpoint, dataset, "validation")
    assert 0 < len(cell_ids) < len(expected.cell_ids)
    result = pseudo_label(*common, "--cells", "validation", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_label_folder(out) == pseudo_labels(cell_ids, image_labels, probabilities, PseudoRule()).labels


def test_default_cells_are_the_kept_cells_of_the_training_images(dataset: Path, checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    cell_ids, image_labels, probabilities = recompute(checkpoint, dataset, "train")
    rule = PseudoRule(negative_cutoff=0.5)
    result = pseudo_label("--checkpoint", checkpoint, "--dataset", dataset, "--out", tmp_path / "p",
                          "--negative-cutoff", "0.5", "-b", str(BATCH), "--workers", "1", "--device", "cpu",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = pseudo_labels(cell_ids, image_labels, probabilities, rule).labels
    assert read_label_folder(tmp_path / "p") == expected and any(expected.values())
    validation = set(read_split(dataset).validation_images)
    assert not any(cell.rsplit("_", 1)[0] in validation for cell in cell_ids)


def test_unusable_input_is_a_one_line_error(dataset: Path, checkpoint: Path, tmp_path: Path) -> None:
    missing = pseudo_label("--checkpoint", tmp_path / "nope.pt", "--dataset", dataset,
                           "--out", tmp_path / "p", cwd=tmp_path)
    assert_one_line_error(missing, "nope.pt", "checkpoint does not exist")
    assert not (tmp_path / "p").exists()
    (tmp_path / "file").write_text("")
    assert_one_line_error(pseudo_label("--checkpoint", checkpoint, "--dataset", dataset, "--out",
                                       tmp_path / "file", cwd=tmp_path), "is not a folder")
    assert_one_line_error(pseudo_label("--checkpoint", checkpoint, "--dataset", tmp_path, "--out",
                                       tmp_path / "p", "--device", "cpu", cwd=tmp_path), "not a cell dataset")


@pytest.mark.parametrize("args, fragment", [
    (["--positive-class", "18"], "--positive-class: expected an integer in [0, 17], got 18"),
    (["--negative-cutoff", "1"], "--negative-cutoff: expected a number in (0, 1)"),
    (["--negative-value", "2"], "--negative-value: expected a number in [0, 1]"),
    (["--positive-cutoff", "0.8"], "--positive-cutoff: only used with --positive-class"),
    (["--cells", "test"], "--cells"),
])
def test_bad_flags_are_usage_errors(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = pseudo_label("--checkpoint", "c.pt", "--dataset", "d", "--out", "p", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "usage:" in result.stderr and fragment in result.stderr


def test_help_explains_every_flag(tmp_path: Path) -> None:
    result = pseudo_label("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--checkpoint", "--dataset", "--out", "--cells", "--negative-cutoff", "--negative-value",
                 "--positive-class", "--positive-cutoff", "--positive-value", "--batch-size", "--overwrite"):
        assert flag in text, flag
    assert "default: 0.9" in text and "default: 0.99" in text and "Mitotic spindle" in text
