"""How tiles are cut travels with them: the 4th place's exact crop, the tile spec in the cell store
and in every checkpoint, inference cutting each member's tiles its way, the checks of the tools
that read stored tiles, and what was written before the spec (a store, a checkpoint) still read,
resumed and inferred with identically."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hpasc.cells.crop import cell_boxes, crop_cell, crop_cells
from hpasc.cells.thresholds import Thresholds
from hpasc.cells.tile_spec import TileSpec
from hpasc.cellstore import open_cells
from hpasc.core.errors import InputError
from hpasc.models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from hpasc.models.registry import create_model
from hpasc.models.runner import check_tiles_for, warn_enlarging
from hpasc.models.spec import ModelSpec
from hpasc.stages.infer.ensemble import LoadedEnsemble
from hpasc.stages.infer.ensemble_file import read_ensemble
from hpasc.stages.infer.jobs import CellCutter, cells_of_image
from tests.conftest import REPO, run_script

RESIZE = TileSpec(32, mode="resize")
BEFORE = REPO / "tests" / "data" / "made_before_tile_spec"  # see its README.md


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(1, 65535, (100, 100, 4), dtype=np.uint16)
    cells = np.zeros((100, 100), np.uint16)
    cells[40:50, 45:49] = 1  # a tall cell: 10 rows, 4 columns
    cells[30:35, 50:60] = 2  # a neighbour inside cell 1's window
    return image, cells


def test_their_crop_squares_the_box_adds_16_px_and_zeroes_only_other_cells() -> None:
    image, cells = two_cells()
    # Tall box: the columns grow by 3 and 3 to a square, then 16 px on every side: rows 24:66,
    # columns 26:68, a 42 px square, so at S = 42 no resize happens.
    tile = crop_cell(image, cells, 1, cell_boxes(cells)[1], TileSpec(42, zero="others"))
    expected = image[24:66, 26:68].copy()
    expected[cells[24:66, 26:68] == 2] = 0
    np.testing.assert_array_equal(tile, expected.transpose(2, 0, 1))
    assert (tile[:, 0, 0] != 0).all()  # background is kept, unlike the default crop
    default = crop_cell(image, cells, 1, cell_boxes(cells)[1], TileSpec(42))
    assert (default[:, 0, 0] == 0).all()


def test_their_crop_is_clipped_at_the_image_edge() -> None:
    image, cells = two_cells()
    cells[:] = 0
    cells[0:4, 0:10] = 1  # wide, at the corner: rows grow by 3, 3, the window clips to rows 0:23, cols 0:26
    tile = crop_cell(image, cells, 1, cell_boxes(cells)[1], TileSpec(26, zero="others"))
    square = np.zeros((26, 26, 4), np.uint16)
    square[1:24] = image[0:23, 0:26]  # padded to a square, centred (the odd pixel after)
    np.testing.assert_array_equal(tile, square.transpose(2, 0, 1))


def test_their_margin_is_part_of_the_spec() -> None:
    image, cells = two_cells()
    narrow = crop_cell(image, cells, 1, cell_boxes(cells)[1], TileSpec(26, zero="others", margin=8))
    expected = image[32:58, 34:60].copy()  # the 10 px square grown by 8, not 16
    expected[cells[32:58, 34:60] == 2] = 0
    np.testing.assert_array_equal(narrow, expected.transpose(2, 0, 1))
    assert TileSpec(zero="others").margin == 16 and TileSpec().margin == 0
    assert TileSpec(zero="others").mismatch(TileSpec(zero="others", margin=8)) == \
        "expected margin 16; given margin 8"


def test_the_crop_rules_live_in_the_spec() -> None:
    with pytest.raises(ValueError, match="mode pad, no context"):
        TileSpec(64, mode="resize", zero="others")
    with pytest.raises(ValueError, match="a margin belongs to the 4th place's crop"):
        TileSpec(64, margin=4)
    result = run_script("image_cutter.py", "-i", "x", "-m", "y", "-o", "z", "--zero", "others", "--context", "4")
    assert result.returncode == 2 and "zero others is the 4th place's crop" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("image_cutter.py: error: --size/--mode/--context/--zero")


def test_one_rule_compares_everything_but_the_size() -> None:
    assert TileSpec(16).mismatch(TileSpec(512)) is None and TileSpec(16).accepts(TileSpec(512))
    assert TileSpec(16).mismatch(TileSpec(512), size=True) == "expected size 16; given size 512"
    assert RESIZE.mismatch(TileSpec(32)) == "expected mode resize; given mode pad"
    other = TileSpec(thresholds=Thresholds(cut=0.5))
    assert TileSpec().mismatch(other).startswith("expected thresholds blue_yellow_share=0.05")
    assert not TileSpec().accepts(other)
    for spec in (RESIZE, TileSpec(8, zero="others", margin=3), other):
        assert TileSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="version 1 or older"):
        TileSpec.from_dict({**RESIZE.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="unknown fields colour"):
        TileSpec.from_dict({**RESIZE.to_dict(), "colour": "red"})


def test_a_record_without_a_field_reads_it_as_its_default() -> None:
    """A field added later (here: any of them) lets the records written before it load."""
    record = RESIZE.to_dict()
    del record["context"], record["thresholds"]["red_share"]
    assert TileSpec.from_dict(record) == RESIZE
    assert TileSpec.from_dict({"version": 1, "size": 64}) == TileSpec(64)


def test_the_spec_s_thresholds_decide_the_factors() -> None:
    """The heuristics' numbers are obeyed where they are recorded: cut_image judges cells by the
    spec's thresholds, not by this version's defaults."""
    from hpasc.cells.cut import cut_image

    image, cells = two_cells()
    nuclei = np.zeros_like(cells)
    nuclei[40:46, 40:46] = 1  # cell 1 has a nucleus with blue signal; cell 2 has none
    image[..., 2] = 1000
    _, ours = cut_image(image, cells, nuclei, "x", [0], TileSpec(16))
    _, theirs = cut_image(image, cells, nuclei, "x", [0], TileSpec(16, thresholds=Thresholds(no_nucleus=0.2)))
    assert ours["mask_id"].tolist() == [1, 2] and ours["border"].iloc[1] == 0.01 and theirs["border"].iloc[1] == 0.2
    assert ours["border"].iloc[0] == theirs["border"].iloc[0]


def test_records_made_before_the_spec_read_as_the_settings_that_made_them() -> None:
    assert TileSpec.from_record({"tile_size": 64, "recipe": None}) == TileSpec(64)
    old = {"tile_size": 64, "recipe": {"mode": "pad", "context": 0, "zero": "others", "factors": {"cut": 0.002}}}
    assert TileSpec.from_record(old) == TileSpec(64, zero="others", margin=16, thresholds=Thresholds(cut=0.002))


def spec_checkpoint(path: Path, tiles: TileSpec) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), tiles)
    save_checkpoint(path, make_checkpoint(create_model("efficientnet-b0", 18, tile_size=tiles.size), spec, 1, [], {}))
    return path


def test_an_ensemble_mixing_tile_specs_cuts_once_per_spec(tmp_path: Path) -> None:
    spec_checkpoint(tmp_path / "resize.pt", RESIZE)
    spec_checkpoint(tmp_path / "resize-small.pt", RESIZE.resized(24))
    spec_checkpoint(tmp_path / "pad.pt", TileSpec(48))
    (tmp_path / "e.yaml").write_text("groups: [{members: [resize.pt, pad.pt, resize-small.pt]}]\n")
    loaded = LoadedEnsemble(read_ensemble(tmp_path / "e.yaml"), torch.device("cpu"))
    assert loaded.tile_specs == (TileSpec(32, "resize"), TileSpec(48, "pad"))
    image, cells = two_cells()
    found = cells_of_image("img", image, cells, None, CellCutter(loaded.tile_specs))
    np.testing.assert_array_equal(found.tiles[0], crop_cells(image, cells, TileSpec(32, "resize"))[2])
    np.testing.assert_array_equal(found.tiles[1], crop_cells(image, cells, TileSpec(48))[2])
    scores = loaded([torch.from_numpy(t) for t in found.tiles])
    assert scores.shape == (2, 19)
    with pytest.raises(ValueError, match="1 tile batches for 2 tile specs"):
        loaded(torch.from_numpy(found.tiles[0]))


def synthetic_images(root: Path, count: int) -> Path:
    """``root`` with ``count`` 256 px synthetic images (seed 3) in ``root/syn``."""
    result = run_script("-m", "hpasc.commands.synthetic", "-o", root / "syn", "-n", count, "--size", 256, "--seed", 3,
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def resized(tmp_path_factory) -> Path:
    """A synthetic dataset cut with --mode resize (16 px tiles), its split, a model trained on it."""
    root = synthetic_images(tmp_path_factory.mktemp("recipe"), 6)
    for args in (("image_cutter.py", "-i", root / "syn", "-m", root / "syn" / "truth", "-o", root / "dataset",
                  "--size", 16, "--mode", "resize", "--no-progress"),
                 ("data_loader.py", "-i", root / "dataset", "--folds", 2),
                 ("train_me.py", "-i", root / "dataset", "-s", root / "models", "-n", "r", "--epochs", 1,
                  "--epoch-size", 32, "--tile-size", 16, "--workers", 1, "--pretrained", "none", "--no-progress")):
        result = run_script(*args)
        assert result.returncode == 0, result.stderr
    return root


def test_the_store_and_the_checkpoint_record_the_tile_spec(resized: Path) -> None:
    store = open_cells(resized / "dataset")
    assert store.tile_spec == TileSpec(16, "resize") and store.tile_spec.thresholds.red_share == 0.077
    spec = ModelSpec.from_dict(load_checkpoint(resized / "models" / "r-1.pt")["model_spec"])
    assert spec.tile_spec == store.tile_spec


def test_infer_cuts_resized_tiles_for_a_resize_checkpoint(resized: Path, tmp_path: Path) -> None:
    result = run_script("infer.py", "-i", resized / "syn", "-e", resized / "models" / "r-1.pt", "-o",
                        tmp_path / "sub.csv", "--backend", "classical", "--workers", 1, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "tiles size 16, mode resize, context 0, zero outside, margin 0" in result.stderr


def test_tools_refuse_tiles_cut_another_way(resized: Path, tmp_path: Path, caplog) -> None:
    store = open_cells(resized / "dataset")
    check_tiles_for(store, ModelSpec("efficientnet-b0", 4, tuple(range(18)), RESIZE.resized(16)))
    with pytest.raises(InputError, match="not cut the way the model's training tiles were"):
        check_tiles_for(store, ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(16)))  # a padded model
    pad = spec_checkpoint(tmp_path / "pad.pt", TileSpec(16))
    result = run_script("-m", "hpasc.commands.pseudo_label", "--checkpoint", pad, "--dataset", resized / "dataset",
                        "--out", tmp_path / "pseudo", "--no-progress")
    assert result.returncode == 2 and "(expected mode pad; given mode resize)" in result.stderr
    with caplog.at_level(logging.WARNING):
        warn_enlarging(16, 64, resized / "dataset")
    assert "holds 16 px tiles, the model takes 64 px" in caplog.text


def test_a_store_made_before_the_spec_is_read() -> None:
    store = open_cells(BEFORE / "dataset")
    assert store.tile_spec == TileSpec(16, zero="others", margin=16) and len(store) == 89
    assert store[0].shape == (4, 16, 16) and store[0].any()


@pytest.fixture(scope="module")
def before(tmp_path_factory) -> Path:
    """The synthetic images the checkpoint made before the spec was trained and run on."""
    return synthetic_images(tmp_path_factory.mktemp("before"), 4)


def masks_by_digest(submission: Path) -> dict[str, list[tuple[str, float, str]]]:
    """Each image's predictions: (class, confidence, the first 12 hex digits of its mask's SHA-1)."""
    found = {}
    for row in csv.DictReader(submission.open()):
        tokens = row["PredictionString"].split()
        found[row["ID"]] = [(tokens[i], float(tokens[i + 1]), hashlib.sha1(tokens[i + 2].encode()).hexdigest()[:12])
                            for i in range(0, len(tokens), 3)]
    return found


def test_a_checkpoint_made_before_the_spec_infers_identically(before: Path, tmp_path: Path) -> None:
    result = run_script("infer.py", "-i", before / "syn", "-e", BEFORE / "old-1.pt", "-o", tmp_path / "sub.csv",
                        "--backend", "classical", "--workers", 1, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "zero others, margin 16" in result.stderr
    got = masks_by_digest(tmp_path / "sub.csv")
    expected = {}
    for row in csv.DictReader((BEFORE / "expected.csv").open()):
        tokens = row["Predictions"].split()
        expected[row["ID"]] = [(tokens[i], float(tokens[i + 1]), tokens[i + 2]) for i in range(0, len(tokens), 3)]
    assert got.keys() == expected.keys()
    for image_id, predictions in expected.items():
        assert [(c, m) for c, _, m in got[image_id]] == [(c, m) for c, _, m in predictions]
        # Six printed decimals: another CPU's last float bit may flip the sixth.
        np.testing.assert_allclose([p for _, p, _ in got[image_id]], [p for _, p, _ in predictions], atol=2e-6)


def test_a_checkpoint_made_before_the_spec_resumes(tmp_path: Path) -> None:
    shutil.copytree(BEFORE / "dataset", tmp_path / "dataset")
    checkpoint = load_checkpoint(BEFORE / "old-1.pt")
    assert "tile_spec" not in checkpoint["model_spec"]  # as that version wrote it
    checkpoint["args"]["dataset"] = str(tmp_path / "dataset")  # the run's dataset, moved here
    save_checkpoint(tmp_path / "models" / "old-1.pt", checkpoint)
    result = run_script("train_me.py", "-i", tmp_path / "dataset", "-s", tmp_path / "models", "-n", "old",
                        "--arch", "timm:test_efficientnet", "--epochs", 2, "--epoch-size", 32, "--tile-size", 16,
                        "--workers", 1, "--pretrained", "none", "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "trained to epoch 2 of 2" in result.stderr
    resumed = ModelSpec.from_dict(load_checkpoint(tmp_path / "models" / "old-2.pt")["model_spec"])
    assert resumed.tile_spec == TileSpec(16, zero="others", margin=16)


def test_a_margin_mismatch_between_a_store_and_a_checkpoint_is_one_line(before: Path, tmp_path: Path) -> None:
    result = run_script("image_cutter.py", "-i", before / "syn", "-m", before / "syn" / "truth", "-o",
                        tmp_path / "dataset", "--size", 16, "--zero", "others", "--margin", 8, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert run_script("data_loader.py", "-i", tmp_path / "dataset", "--folds", 2).returncode == 0
    result = run_script("-m", "hpasc.commands.pseudo_label", "--checkpoint", BEFORE / "old-1.pt", "--dataset",
                        tmp_path / "dataset", "--out", tmp_path / "pseudo", "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'dataset'}: its tiles are not cut the way the model's training tiles were (expected "
        "margin 16; given margin 8): cut the images again with hpasc-cut --mode/--context/--zero/--margin"]
