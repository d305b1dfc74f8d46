"""Tests of the synthetic data generator: determinism, the files it writes, the truth masks,
the label rules and whether the green channel shows what the labels say."""

from __future__ import annotations

import argparse
import csv
import subprocess
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from hpasc.commands.synthetic import build_parser, parse_size
from hpasc.core import images, runtime
from hpasc.core.classes import MITOTIC_SPINDLE, NEGATIVE, NUM_CLASSES, parse_labels
from hpasc.core.image_folder import scan_images
from hpasc.tools import synthetic
from tests.conftest import assert_one_line_error, run_script

QUIET = runtime.CommonOptions(progress=False)
CLI_SIZE = (256, 320)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_script("-m", "hpasc.commands.synthetic", *args, timeout=120)


def synth(size: tuple[int, int], *key: int, classes: tuple[int, ...] | None = None):
    return synthetic.synthesize_image(size, np.random.default_rng(list(key)), classes=classes)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def neighbour_pairs(cells: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((cells[:, :-1], cells[:, 1:]), (cells[:-1], cells[1:])):
        edge = (a != b) & (a > 0) & (b > 0)
        pairs |= set(zip(np.minimum(a[edge], b[edge]).tolist(), np.maximum(a[edge], b[edge]).tolist()))
    return pairs


def green_excess(image: synthetic.SyntheticImage) -> np.ndarray:
    green = image.image[..., 1].astype(np.float64)
    return green - np.median(green[image.cells == 0])


def interior_cells(image: synthetic.SyntheticImage) -> list[int]:
    return [m for m in image.labels if not touches_border(image.cells == m)]


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    result = run_cli("-o", str(out), "-n", "3", "--size", "256x320", "--seed", "5", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


# --- determinism ----------------------------------------------------------------------------------

def test_same_seed_gives_identical_images():
    first, second = synth((256, 256), 3, 1), synth((256, 256), 3, 1)
    for name in ("image", "cells", "nuclei"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.labels == second.labels


def test_different_seed_gives_a_different_image():
    assert not np.array_equal(synth((256, 256), 3, 1).image, synth((256, 256), 4, 1).image)


def test_image_i_does_not_depend_on_count_and_rerun_is_idempotent(cli_dataset, tmp_path):
    ids = synthetic.generate_dataset(tmp_path, 5, CLI_SIZE, 5, QUIET)
    assert ids[:3] == [r["ID"] for r in read_csv(cli_dataset / "train.csv")]
    five = file_bytes(tmp_path)
    three = file_bytes(cli_dataset)
    shared = [name for name in three if not name.endswith((".csv", ".json"))]
    assert len(shared) == 3 * 6
    assert all(three[name] == five[name] for name in shared)
    synthetic.generate_dataset(tmp_path, 5, CLI_SIZE, 5, QUIET)
    assert file_bytes(tmp_path) == five


def test_a_rerun_with_the_same_settings_keeps_the_dataset(tmp_path, caplog):
    # Issue 29, item 5: the demo's re-run made its 80 images again (about 2 minutes).
    caplog.set_level("INFO")
    synthetic.generate_dataset(tmp_path, 2, (128, 128), 7, QUIET)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    assert synthetic.generate_dataset(tmp_path, 2, (128, 128), 7, QUIET) == [synthetic.image_id(7, i) for i in (0, 1)]
    assert "made before, kept" in caplog.text
    assert caplog.text.count("wrote 2 synthetic images") == 1  # the first run's, not the re-run's (issue 38, item 13)
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    (tmp_path / "truth" / "nuclei" / f"{synthetic.image_id(7, 1)}.png").unlink()  # not whole: made again
    synthetic.generate_dataset(tmp_path, 2, (128, 128), 7, QUIET)
    assert all(p.stat().st_mtime_ns != stamp for p, stamp in stamps.items() if p.exists())
    for changed, count in ((runtime.CommonOptions(progress=False, overwrite=True), 2),
                           (QUIET, 3)):  # --overwrite; another count
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
        synthetic.generate_dataset(tmp_path, count, (128, 128), 7, changed)
        assert all(p.stat().st_mtime_ns != stamp for p, stamp in before.items())


def test_image_ids_are_uuids_unique_and_reproducible():
    ids = [synthetic.image_id(seed, index) for seed in range(3) for index in range(50)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i and "_" not in i for i in ids)
    assert synthetic.image_id(2, 7) == synthetic.image_id(2, 7)


# --- the files the command line writes ------------------------------------------------------------

def test_cli_writes_every_file(cli_dataset):
    ids = [r["ID"] for r in read_csv(cli_dataset / "train.csv")]
    expected = {"train.csv", "truth/cells.csv", "synthetic.json"}
    for image_id in ids:
        expected |= {f"{image_id}_{c}.png" for c in images.CHANNELS}
        expected |= {f"truth/{image_id}.png", f"truth/nuclei/{image_id}.png"}
    assert set(file_bytes(cli_dataset)) == expected


def test_written_images_are_16_bit_with_the_full_range_used(cli_dataset):
    folder = scan_images(cli_dataset)
    for row in read_csv(cli_dataset / "train.csv"):
        image = folder.read(row["ID"])
        assert image.dtype == np.uint16 and image.shape == (*CLI_SIZE, 4)
        assert image.max() > 10000
        assert (image.reshape(-1, 4).max(axis=0) > 255).all()
        assert (image % 257 != 0).any(), "looks like 8-bit data scaled by 257"


def test_train_labels_are_the_union_of_the_cell_labels(cli_dataset):
    cell_labels: dict[str, set[int]] = {}
    for row in read_csv(cli_dataset / "truth" / "cells.csv"):
        labels = parse_labels(row["Label"])
        assert labels and labels == sorted(labels)
        cell_labels.setdefault(row["ID"], set()).update(labels)
    train = read_csv(cli_dataset / "train.csv")
    assert len(train) == 3
    for row in train:
        assert parse_labels(row["Label"]) == sorted(cell_labels[row["ID"]])


def test_masks_match_cells_csv_and_nuclei_lie_inside_their_cells(cli_dataset):
    rows = read_csv(cli_dataset / "truth" / "cells.csv")
    for image_id in {r["ID"] for r in rows}:
        cells = images.read_label_image(cli_dataset / "truth" / f"{image_id}.png")
        nuclei = images.read_label_image(cli_dataset / "truth" / "nuclei" / f"{image_id}.png")
        assert cells.dtype == nuclei.dtype == np.uint16 and cells.shape == CLI_SIZE
        mask_ids = sorted(int(r["mask_id"]) for r in rows if r["ID"] == image_id)
        assert mask_ids == list(range(1, len(mask_ids) + 1))
        assert np.unique(cells[cells > 0]).tolist() == mask_ids
        assert np.unique(nuclei[nuclei > 0]).tolist() == mask_ids
        assert np.array_equal(nuclei[nuclei > 0], cells[nuclei > 0])


# --- geometry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(128, 128), (300, 200), (512, 512)])
def test_every_cell_is_one_piece_with_one_nucleus_and_some_cytoplasm(size):
    for index in range(3):
        image = synth(size, 9, index)
        assert 10 <= len(image.labels) <= 40
        for mask_id in image.labels:
            cell, nucleus = image.cells == mask_id, image.nuclei == mask_id
            assert ndimage.label(cell)[1] == 1 and ndimage.label(nucleus)[1] == 1
            assert not (nucleus & ~cell).any()
            assert cell.sum() > nucleus.sum()


def test_cells_touch_the_border_and_each_other_and_some_stand_alone():
    for index in range(4):
        image = synth((512, 512), 2, index)
        pairs = neighbour_pairs(image.cells)
        assert any(touches_border(image.cells == m) for m in image.labels)
        assert pairs
        assert set(image.labels) - {m for pair in pairs for m in pair}, "every cell has a neighbour"


def test_debris_lies_outside_every_cell_and_is_bright_in_several_channels():
    for index in range(4):
        image = synth((512, 512), 4, index)
        background = np.median(image.image[image.cells == 0], axis=0)
        bright = (image.image > background + 8000).sum(axis=-1) >= 2
        found, count = ndimage.label(bright & (image.cells == 0), structure=np.ones((3, 3)))
        # Single pixels just outside a bright cell are its blur, not debris.
        objects = [found == k for k in range(1, count + 1) if (found == k).sum() >= 5]
        assert 2 <= len(objects) <= 4
        near_cells = cv2.dilate((image.cells > 0).view(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert not any((near_cells & speck).any() for speck in objects)


# --- labels ---------------------------------------------------------------------------------------

def test_label_rules_hold_and_every_class_occurs():
    seen: set[int] = set()
    for index in range(60):
        image = synth((128, 128), 0, index)
        union = image.image_labels
        seen.update(union)
        assert union == tuple(sorted(set().union(*image.labels.values())))
        assert all(image.labels.values())
        if NEGATIVE in union:
            assert all(labels == (NEGATIVE,) for labels in image.labels.values())
        if MITOTIC_SPINDLE in union:
            assert set(union) - {MITOTIC_SPINDLE, NEGATIVE}
            dividing = [m for m, labels in image.labels.items() if MITOTIC_SPINDLE in labels]
            assert 1 <= len(dividing) <= 2
            assert all(image.labels[m] == (MITOTIC_SPINDLE,) for m in dividing)
    assert seen == set(range(NUM_CLASSES))


@pytest.mark.parametrize("classes", [(NEGATIVE, 3), (MITOTIC_SPINDLE,), (NUM_CLASSES,), ()])
def test_forced_classes_must_follow_the_rules(classes):
    with pytest.raises(ValueError):
        synth((128, 128), 0, 0, classes=classes)


def test_spindle_cells_are_round_dividing_cells():
    image = synth((512, 512), 1, 0, classes=(MITOTIC_SPINDLE, 16))
    dividing = [m for m, labels in image.labels.items() if labels == (MITOTIC_SPINDLE,)]
    assert dividing
    for mask_id in dividing:
        cell = (image.cells == mask_id).view(np.uint8)
        contour = max(cv2.findContours(cell, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
        roundness = 4 * np.pi * cv2.contourArea(contour) / cv2.arcLength(contour, True) ** 2
        assert roundness > 0.7
        # The chromosome plate is a thin bar, not an oval nucleus.
        nucleus = image.nuclei == mask_id
        assert nucleus.sum() < 0.25 * cell.sum()


# --- the green channel agrees with the labels -----------------------------------------------------

def test_negative_cells_show_only_background_green():
    image = synth((384, 384), 11, NEGATIVE, classes=(NEGATIVE,))
    excess = green_excess(image)
    for mask_id in image.labels:
        assert abs(excess[image.cells == mask_id].mean()) < 30


def nuclear_shares(label: int) -> list[float]:
    """For each interior cell of an image of class ``label``: its share of green in the nucleus."""
    image = synth((384, 384), 11, label, classes=(label,))
    excess = green_excess(image)
    shares = []
    for mask_id in interior_cells(image):
        cell = excess[image.cells == mask_id].sum()
        assert cell > 0
        shares.append(excess[image.nuclei == mask_id].sum() / cell)
    assert shares, "no interior cell to measure"
    return shares


@pytest.mark.parametrize("label", [0, 2, 4, 5])
def test_nuclear_classes_put_the_green_in_the_nucleus(label):
    assert min(nuclear_shares(label)) > 0.8


@pytest.mark.parametrize("label", [6, 14, 16, 17])
def test_cytoplasmic_classes_put_the_green_outside_the_nucleus(label):
    assert max(nuclear_shares(label)) < 0.2


def test_plasma_membrane_green_lies_on_the_cell_boundary():
    image = synth((384, 384), 11, 13, classes=(13,))
    excess = green_excess(image)
    for mask_id in interior_cells(image):
        cell = (image.cells == mask_id).view(np.uint8)
        band = (cell > 0) & (cv2.erode(cell, np.ones((5, 5), np.uint8)) == 0)
        inner = cv2.erode(cell, np.ones((9, 9), np.uint8)) > 0
        assert excess[band].mean() > 4 * excess[inner].mean()


# --- command line ---------------------------------------------------------------------------------

def test_help_explains_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--out", "--count", "--size", "--seed", "--log-level", "--no-progress"):
        assert flag in result.stdout


def test_bad_flag_value_exits_with_a_message_and_no_traceback(tmp_path):
    result = run_cli("-o", str(tmp_path), "--size", "100")
    assert result.returncode == 2
    assert "--size" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert_one_line_error(run_cli("-o", str(target), "-n", "1", "--size", "128"), str(target))


@pytest.mark.parametrize("argv", [["-n", "0"], ["--size", "127"], ["--size", "12x"],
                                  ["--size", "256x256x3"], ["--size", "big"], ["--seed", "-1"]])
def test_parser_refuses_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["-o", "out", *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_size_accepts_square_and_height_by_width():
    assert parse_size("512") == (512, 512)
    assert parse_size("768x1024") == (768, 1024)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("64")
