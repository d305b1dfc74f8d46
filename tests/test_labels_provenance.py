"""Cell ids and the segmentation they were made on: the segmentation record the segmentator writes
and image_cutter.py keeps, the refusal of ids made on other masks, and the remap across
segmentations, on the real samples (HPA's masks against the classical backend's)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from hpasc.cells.provenance import HPA_PUBLISHED, Provenance, read_provenance, record_provenance, same_cell_ids
from hpasc.core.errors import InputError
from hpasc.core.images import read_label_image
from hpasc.labels.files import read_label_lines
from hpasc.labels.pickles import read_id_set
from tests.conftest import assert_one_line_error, run_script

FAST = ("--epochs", "1", "--epoch-size", "32", "--tile-size", "32", "--workers", "1", "--no-progress",
        "--pretrained", "none")


@pytest.fixture(scope="module")
def classical(tmp_path_factory, hpa_real: Path) -> Path:
    """``root/masks``: the classical backend's masks of the real samples; ``root/dataset`` cut from
    them (32 px tiles) and split."""
    root = tmp_path_factory.mktemp("provenance")
    for args in (("segmentator.py", "-i", hpa_real / "images", "-c", root / "masks", "--backend", "classical",
                  "--no-progress"),
                 ("image_cutter.py", "-i", hpa_real / "images", "-m", root / "masks", "-o", root / "dataset",
                  "--size", 32, "--labels", hpa_real / "train.csv", "--no-progress"),
                 ("data_loader.py", "-i", root / "dataset", "--folds", 2)):
        result = run_script(*args)
        assert result.returncode == 0, result.stderr
    return root


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_the_record_travels_from_masks_to_dataset(classical: Path) -> None:
    assert read_provenance(classical / "masks") == Provenance("classical")
    assert read_provenance(classical / "dataset") == Provenance("classical")


def test_record_refuses_to_mix_segmentations(tmp_path: Path) -> None:
    record_provenance(tmp_path, Provenance("classical"), keeps_others=False)
    with pytest.raises(InputError, match="made by the classical backend; this run uses HPA's"):
        record_provenance(tmp_path, Provenance("hpa", {"a.pth": "1"}), keeps_others=True)
    record_provenance(tmp_path, Provenance("hpa", {"a.pth": "1"}), keeps_others=False)  # all redone
    assert not same_cell_ids(Provenance("hpa", {"a.pth": "1"}), Provenance("hpa", {"a.pth": "2"}))
    assert same_cell_ids(HPA_PUBLISHED, read_provenance(tmp_path))


def test_remap_moves_ids_to_the_same_physical_cells(classical: Path, hpa_real: Path, tmp_path: Path) -> None:
    out = tmp_path / "remapped"
    result = run_script("-m", "hpasc.commands.labels", "remap", hpa_real / "labels", "--from-masks",
                        hpa_real / "masks", "--from-suffix", "_cellmask", "--to-masks", classical / "masks", "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("remap: 17 ids moved, 1 dropped (no cell at IoU >= 0.6), 0 dropped")
    assert read_provenance(out) == Provenance("classical")
    for name in ("8.txt", "11.txt"):
        before = read_label_lines(hpa_real / "labels" / name)
        after = read_label_lines(out / name)
        assert len(after) == len(before) - (name == "11.txt")  # one class-11 cell has no match
        for cell_id, value, _ in after:
            image_id, k = cell_id.rsplit("_", 1)
            hpa = read_label_image(hpa_real / "masks" / f"{image_id}_cellmask.png")
            ours = read_label_image(classical / "masks" / f"{image_id}.png")
            # the source line whose HPA cell this cell overlaps at IoU >= 0.6 carries the same value
            cell = ours == int(k) + 1
            sources = [(c, v) for c, v, _ in before if iou(hpa == int(c.rsplit("_", 1)[1]) + 1, cell) >= 0.6]
            assert len(sources) == 1 and sources[0][1] == value
    moved = sum(1 for _ in read_label_lines(out / "11.txt"))
    same_number = sum(c == d for (c, _, _), (d, _, _) in zip(read_label_lines(hpa_real / "labels" / "11.txt"),
                                                           read_label_lines(out / "11.txt")))
    assert same_number < moved  # neighbours did swap numbers: the remap is not the identity


def test_remap_keeps_the_4th_place_layout(classical: Path, hpa_real: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    (theirs / "relabel").mkdir(parents=True)
    (theirs / "auto-relabel").mkdir()
    (theirs / "relabel" / "11.txt").write_bytes((hpa_real / "labels" / "11.txt").read_bytes())
    (theirs / "relabel" / "6.txt").write_text("5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0 1\n")
    ids = {c for c, _, _ in read_label_lines(hpa_real / "labels" / "8.txt")}
    (theirs / "auto-relabel" / "8.p").write_bytes(pickle.dumps(ids))
    out = tmp_path / "out"
    result = run_script("-m", "hpasc.commands.labels", "remap", theirs, "--from-masks", hpa_real / "masks",
                        "--from-suffix",
                        "_cellmask", "--to-masks", classical / "masks", "-o", out)
    assert result.returncode == 0, result.stderr
    assert (out / "relabel" / "6.txt").read_text() == "5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0 1\n"  # image ids
    assert len(read_id_set(out / "auto-relabel" / "8.p")) == 8
    assert len(read_label_lines(out / "relabel" / "11.txt")) == 9  # 10 ids, 1 without a matching cell
    assert_one_line_error(run_script("-m", "hpasc.commands.labels", "remap", theirs, "--from-masks", hpa_real / "masks",
                                     "--to-masks", classical / "masks", "-o", out), "exists")


def test_a_classical_dataset_refuses_hpa_made_ids(classical: Path, hpa_real: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    (theirs / "relabel").mkdir(parents=True)
    (theirs / "relabel" / "11.txt").write_bytes((hpa_real / "labels" / "11.txt").read_bytes())
    common = ("train_me.py", "-i", classical / "dataset", "-s", tmp_path / "models", *FAST, "--relabel", theirs)
    refused = run_script(*common, "-n", "refused")
    assert_one_line_error(refused, "made on HPA's segmentation", "the classical backend", "remap",
                          "--allow-foreign-ids")
    allowed = run_script(*common, "-n", "allowed", "--allow-foreign-ids")
    assert allowed.returncode == 0, allowed.stderr
    remapped = tmp_path / "remapped"
    result = run_script("-m", "hpasc.commands.labels", "remap", hpa_real / "labels", "--from-masks",
                        hpa_real / "masks", "--from-suffix", "_cellmask", "--to-masks", classical / "masks",
                        "-o", remapped)
    assert result.returncode == 0, result.stderr
    carried = run_script("train_me.py", "-i", classical / "dataset", "-s", tmp_path / "models", *FAST,
                         "--relabel", remapped, "-n", "carried")
    assert carried.returncode == 0, carried.stderr  # a folder remapped onto these masks is accepted


def test_a_label_folder_made_from_a_dataset_gets_its_record(classical: Path, tmp_path: Path) -> None:
    from hpasc.tools.label_tool import open_session

    open_session(classical / "dataset", 0, tmp_path / "relabel")
    assert read_provenance(tmp_path / "relabel") == Provenance("classical")
    record_provenance(tmp_path / "other", HPA_PUBLISHED, keeps_others=False)
    with pytest.raises(InputError, match="holds masks or cells made by HPA's segmentation"):
        open_session(classical / "dataset", 0, tmp_path / "other")


def test_the_record_decides_and_a_folder_without_one_is_said(classical: Path, hpa_real: Path, tmp_path: Path) -> None:
    """A 4th-place folder remapped onto these masks carries their record and is accepted; a SPEC
    folder without a record is applied with a warning; inspect says when ids name other cells."""
    theirs = tmp_path / "theirs"
    (theirs / "relabel").mkdir(parents=True)
    (theirs / "relabel" / "11.txt").write_bytes((hpa_real / "labels" / "11.txt").read_bytes())
    remapped = tmp_path / "remapped"
    result = run_script("-m", "hpasc.commands.labels", "remap", theirs, "--from-masks", hpa_real / "masks",
                        "--from-suffix", "_cellmask", "--to-masks", classical / "masks", "-o", remapped)
    assert result.returncode == 0, result.stderr
    unrecorded = tmp_path / "unrecorded"
    unrecorded.mkdir()
    (unrecorded / "8.txt").write_bytes((hpa_real / "labels" / "8.txt").read_bytes())
    trained = run_script("train_me.py", "-i", classical / "dataset", "-s", tmp_path / "models", *FAST,
                         "--relabel", remapped, "--relabel", unrecorded, "-n", "recorded")
    assert trained.returncode == 0, trained.stderr
    assert f"{unrecorded} has no segmentation record: its ids are applied by name, unchecked" in trained.stderr
    assert "the 4th place's labels" in trained.stderr
    inspect = [run_script("-m", "hpasc.commands.labels", "inspect", folder, "--dataset", classical / "dataset")
               for folder in (theirs, remapped, unrecorded)]
    assert all(r.returncode == 0 for r in inspect), [r.stderr for r in inspect]
    assert "caution: the ids were made on HPA's segmentation, the dataset was cut from the classical backend" \
        in inspect[0].stdout
    assert "caution" not in inspect[1].stdout and "unchecked" not in inspect[1].stdout
    assert "unchecked: the label folder has no segmentation record" in inspect[2].stdout
