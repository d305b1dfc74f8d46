"""Image-level stratified folds (hpasc.stages.split.stage, hpasc.cellstore.split) and data_loader.py, on the competition's real labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpasc.core.classes import NUM_CLASSES, read_label_table
from hpasc.core.errors import InputError
from hpasc.cellstore.split import TRAIN_ONLY, read_split
from hpasc.stages.split.stage import SplitSettings, assign_folds, read_image_table, split_dataset
from tests.conftest import assert_one_line_error, run_script

FOLDS = 5


def cells_table(labels: dict[str, list[int]], seed: int = 0) -> pd.DataFrame:
    """A cells.csv as image_cutter.py writes it: 1-3 cells per image, every cell kept."""
    ids = sorted(labels)
    counts = np.random.default_rng(seed).integers(1, 4, len(ids))
    image_ids = np.repeat(ids, counts)
    cell_ids = [f"{i}_{k}" for i, n in zip(ids, counts) for k in range(1, n + 1)]
    text = {i: "|".join(map(str, labels[i])) for i in ids}
    return pd.DataFrame({"cell_id": cell_ids, "image_id": image_ids,
                         "labels": [text[i] for i in image_ids], "keep": True})


def write_dataset(folder: Path, table: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "cells.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def real_labels(hpa_real: Path) -> dict[str, list[int]]:
    labels = read_label_table(hpa_real / "train.csv")
    assert len(labels) > 20_000
    return labels


@pytest.fixture(scope="module")
def real_split(real_labels, tmp_path_factory):
    """The real train.csv as a cell dataset, split with the defaults (5 folds, seed 42)."""
    dataset = write_dataset(tmp_path_factory.mktemp("real") / "dataset", cells_table(real_labels))
    outcome = split_dataset(dataset)
    assert outcome.written
    return dataset, outcome


# --- the real label file ----------------------------------------------------------------------


def test_every_real_image_is_in_exactly_one_fold(real_labels, real_split) -> None:
    dataset, outcome = real_split
    rows = pd.read_csv(dataset / "split" / "split.csv", dtype={"image_id": str})
    assert rows["image_id"].is_unique
    assert set(rows["image_id"]) == set(real_labels)
    assert set(rows["fold"]) == set(range(FOLDS)) and set(rows["source"]) == {"."}

    split = read_split(dataset)
    assert split.image_folds == dict(zip(rows["image_id"], rows["fold"]))
    assert (split.folds, split.fold, split.seed) == (FOLDS, 0, 42)
    folds = [set(split.fold_images(k)) for k in range(FOLDS)]
    assert sum(map(len, folds)) == len(real_labels) == len(set().union(*folds))
    assert set(split.validation_images) == folds[0]
    assert set(split.train_images) == set(real_labels) - folds[0]
    assert min(map(len, folds)) > 0.95 * len(real_labels) / FOLDS

    # All cells of an image land in its fold: the table's cell counts add up per fold.
    cells = pd.read_csv(dataset / "cells.csv", dtype=str)
    cells_per_fold = cells["image_id"].map(split.image_folds).value_counts().sort_index()
    assert cells_per_fold.tolist() == [f["cells"] for f in outcome.stats["per_fold"]]


def test_real_class_shares_are_stratified(real_labels, real_split) -> None:
    split = read_split(real_split[0])
    ids = sorted(real_labels)
    hot = np.zeros((len(ids), NUM_CLASSES), dtype=bool)
    for row, image_id in enumerate(ids):
        hot[row, real_labels[image_id]] = True
    fold_of = np.array([split.image_folds[i] for i in ids])
    overall = hot.mean(axis=0)
    worst = 0.0
    for c in np.flatnonzero(hot.sum(axis=0) >= 50):
        for k in range(FOLDS):
            deviation = abs(hot[fold_of == k, c].mean() / overall[c] - 1)
            assert deviation <= 0.20, f"class {c} fold {k}: share off by {deviation:.1%}"
            worst = max(worst, deviation)
    assert worst > 0  # a real measurement, not a degenerate split
    recorded = real_split[1].stats["class_share_max_relative_deviation"]
    assert max(d for c, d in enumerate(recorded) if hot[:, c].sum() >= 50) == pytest.approx(worst, abs=1e-4)


def test_split_is_stable_for_a_seed_independent_of_row_order_and_differs_by_seed(
        real_labels, real_split, tmp_path: Path) -> None:
    dataset, _ = real_split
    reference = (dataset / "split" / "split.csv").read_text()

    again = split_dataset(dataset)
    assert not again.written and (dataset / "split" / "split.csv").read_text() == reference

    shuffled = cells_table(real_labels).sample(frac=1, random_state=3)
    other = write_dataset(tmp_path / "shuffled", shuffled)
    split_dataset(other)
    assert (other / "split" / "split.csv").read_text() == reference

    split_dataset(other, settings=SplitSettings(seed=7))
    first, second = read_split(dataset).image_folds, read_split(other).image_folds
    assert first.keys() == second.keys()
    moved = sum(first[i] != second[i] for i in first)
    assert moved > 0.5 * len(first)  # a new seed gives another split, not a relabelled one


# --- reading tables and splits ----------------------------------------------------------------


def test_image_table_unions_labels_and_counts_kept_cells(tmp_path: Path) -> None:
    table = pd.DataFrame({
        "cell_id": range(7),
        "image_id": ["b", "a", "b", "c", "c", "a", "d"],
        "labels": ["3", "0|1", "5|3", "", "", "0|1", "18"],
        "keep": ["True", "False", "true", "True", "1", "True", "False"],
        "extra column": "ignored",
    })
    images = read_image_table(write_dataset(tmp_path / "ds", table))
    assert images.ids.tolist() == ["a", "b", "c"] and images.dropped == 1  # d has no kept cell
    assert images.cells.tolist() == [1, 2, 2]
    assert [np.flatnonzero(row).tolist() for row in images.labels] == [[0, 1], [3, 5], []]


@pytest.mark.parametrize("content, message", [
    ("cell_id,image_id,keep\n1,a,True\n", "missing column(s) labels"),
    ("cell_id,image_id,labels,keep\n", "no cells"),
    ("", "unreadable cell table"),
    ("image_id,labels,keep\na,1,True\nb,19,True\n", "line 3: bad labels '19'"),
    ("image_id,labels,keep\na,1,True\nb,2,maybe\n", "line 3: keep must be True or False"),
    ("image_id,labels,keep\n,1,True\n", "line 2: empty image_id"),
])
def test_bad_tables_are_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "cells.csv").write_text(content)
    with pytest.raises(InputError, match="cells.csv") as raised:
        read_image_table(tmp_path)
    assert message in str(raised.value)


def test_read_split_refuses_an_outdated_or_torn_split(real_labels, tmp_path: Path) -> None:
    labels = dict(sorted(real_labels.items())[:40])
    dataset = write_dataset(tmp_path / "ds", cells_table(labels))
    with pytest.raises(InputError, match="no split"):
        read_split(dataset)
    split_dataset(dataset, settings=SplitSettings(folds=4, fold=3, seed=1))
    assert 5 <= len(read_split(dataset).validation_images) <= 15

    with open(dataset / "cells.csv", "a") as handle:
        handle.write("late_1,late,0,True\n")
    with pytest.raises(InputError, match="changed since the split was made"):
        read_split(dataset)
    assert "late" not in read_split(dataset, check_current=False).image_folds

    csv = dataset / "split" / "split.csv"
    csv.write_text(csv.read_text().replace(",0,.", ",1,.", 1))
    with pytest.raises(InputError, match="does not match split.json"):
        read_split(dataset, check_current=False)


def test_too_few_images_and_small_classes(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", cells_table({"a": [0], "b": [1], "c": []}))
    with pytest.raises(InputError, match="3 image.*too few for 5 folds: pass --folds 3 or fewer"):
        split_dataset(dataset)
    with pytest.raises(ValueError):
        SplitSettings(folds=3, fold=3)
    folds = assign_folds(np.eye(6, NUM_CLASSES, dtype=bool), folds=3, seed=0)
    assert sorted(folds.tolist()) == [0, 0, 1, 1, 2, 2]


# --- data_loader.py as a real subprocess ------------------------------------------------------


def data_loader(*args: str, cwd: Path):
    return run_script("data_loader.py", *args, cwd=cwd, timeout=120)


@pytest.fixture
def workdir(real_labels, tmp_path: Path) -> Path:
    """A folder holding dataset/ (120 real images, with image_cutter's manifest) and extra/."""
    chosen = sorted(real_labels)[:150]
    own = {i: real_labels[i] for i in chosen[:120]}
    extra = {f"pub_{n}": real_labels[i] for n, i in enumerate(chosen[120:])}
    extra[chosen[0]] = real_labels[chosen[0]]  # an id the dataset already has
    write_dataset(tmp_path / "dataset", cells_table(own))
    (tmp_path / "dataset" / "manifest.json").write_text('{"stage": "image_cutter"}\n')
    write_dataset(tmp_path / "extra", cells_table(extra, seed=1))
    return tmp_path


def test_seed_command_line_writes_the_split_and_is_idempotent(workdir: Path) -> None:
    result = data_loader("-i", "dataset", cwd=workdir)
    assert result.returncode == 0, result.stderr
    folder = workdir / "dataset" / "split"
    info = json.loads((folder / "split.json").read_text())
    assert (info["folds"], info["fold"], info["seed"]) == (5, 0, 42)
    sizes = [f["images"] for f in info["per_fold"]]
    assert sum(sizes) == 120 and min(sizes) >= 20
    assert info["validation"]["images"] == sizes[0] and info["train"]["images"] == 120 - sizes[0]
    assert len(info["class_share_max_relative_deviation"]) == NUM_CLASSES
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "data_loader" and manifest["arguments"]["folds"] == 5
    assert json.loads((workdir / "dataset" / "manifest.json").read_text())["stage"] == "image_cutter"
    assert f"fold 0 (validation): {sizes[0]} images" in result.stderr
    assert "classes with fewer images than folds (they cannot be in every fold):" in result.stderr

    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = data_loader("-i", "dataset", cwd=workdir)
    assert again.returncode == 0 and "split unchanged" in again.stderr
    assert stamps == {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_fold_flag_chooses_the_validation_fold(workdir: Path) -> None:
    assert data_loader("-i", "dataset", cwd=workdir).returncode == 0
    first = read_split(workdir / "dataset")
    result = data_loader("-i", "dataset", "--fold", "3", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "replacing the existing split (fold 0 -> 3)" in result.stderr
    second = read_split(workdir / "dataset")
    assert second.fold == 3 and second.image_folds == first.image_folds
    assert set(second.validation_images) == set(first.fold_images(3))
    assert not set(second.validation_images) & set(first.validation_images)
    assert set(second.train_images) == set(first.image_folds) - set(second.validation_images)


def test_extra_images_are_only_trained_on(workdir: Path, real_labels) -> None:
    result = data_loader("-i", "dataset", "-e", "extra", "--folds", "4", "--fold", "1",
                         cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "1 image(s) whose id is already taken are left out" in result.stderr
    split = read_split(workdir / "dataset")
    extra = split.fold_images(TRAIN_ONLY)
    assert extra == sorted(f"pub_{n}" for n in range(30))
    assert all(split.image_folds[i] == TRAIN_ONLY for i in extra)
    for fold in range(split.folds):
        assert not set(extra) & set(split.fold_images(fold))
    assert set(extra) <= set(split.train_images) and not set(extra) & set(split.validation_images)
    assert len(split.validation_images) + len(split.train_images) == 120 + 30
    assert (split.dataset / split.image_sources["pub_0"]).resolve() == (workdir / "extra").resolve()
    assert split.dataset / split.image_sources[split.validation_images[0]] == workdir / "dataset"
    info = json.loads((workdir / "dataset" / "split" / "split.json").read_text())
    assert [s["source"] for s in info["sources"]] == [".", "../extra"]
    assert info["extra"]["images"] == 30
    assert info["train"]["images"] == 150 - len(split.validation_images)
    extra_classes = np.zeros(NUM_CLASSES, int)
    for image_id in sorted(real_labels)[120:150]:
        extra_classes[real_labels[image_id]] += 1
    assert info["extra"]["class_images"] == extra_classes.tolist()


@pytest.mark.parametrize("setup, args, fragments", [
    (lambda w: shutil.rmtree(w / "dataset"), ["-i", "dataset"],
     ["dataset folder dataset not found", "hpasc-cut"]),
    (lambda w: (w / "dataset" / "cells.csv").unlink(), ["-i", "dataset"],
     ["cells.csv not found: run hpasc-cut first"]),
    (lambda w: (w / "dataset" / "cells.csv").write_text("image_id,labels\na,1\n"), ["-i", "dataset"],
     ["cells.csv: missing column(s) keep"]),
    (lambda w: None, ["-i", "dataset", "-e", "nowhere"], ["dataset folder nowhere not found"]),
])
def test_unusable_input_is_a_one_line_error(workdir: Path, setup, args, fragments) -> None:
    setup(workdir)
    assert_one_line_error(data_loader(*args, cwd=workdir), *fragments)
    assert not (workdir / "dataset" / "split").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--folds", "1"], "--folds"),
    (["--fold", "5"], "--fold 5 must be below --folds 5"),
    (["--folds", "3", "--fold", "3"], "--fold 3 must be below --folds 3"),
    (["--seed", "-1"], "--seed"),
    ([], "-i/--input"),
])
def test_bad_flags_are_usage_errors(workdir: Path, args: list[str], fragment: str) -> None:
    result = data_loader(*(["-i", "dataset"] if args else []), *args, cwd=workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "usage:" in result.stderr and fragment in result.stderr
    assert not (workdir / "dataset" / "split").exists()


def test_help_explains_every_flag(tmp_path: Path) -> None:
    result = data_loader("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag, words in [("--input", "cells.csv"), ("--extra", "never validated on"),
                        ("--folds", "number of folds"), ("--fold", "used for validation"),
                        ("--seed", "same folds"), ("--log-level", "verbosity")]:
        assert flag in text and words in text, flag
    assert "split/split.csv" in text and "fold -1" in text
