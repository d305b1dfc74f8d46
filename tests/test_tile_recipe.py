"""How tiles are cut travels with them: the 4th place's exact crop, the recipe in the cell store
and in every checkpoint, inference cutting each member's tiles its way, and the checks of the
tools that read stored tiles."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from hpasc.cells.crop import CropSettings, cell_boxes, crop_cell, crop_cells, recipe_mismatch
from hpasc.cellstore import open_cells
from hpasc.errors import InputError
from hpasc.inference.ensemble import LoadedEnsemble
from hpasc.inference.ensemble_file import read_ensemble
from hpasc.inference.jobs import CutPlan, cells_of_image
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint
from hpasc.models.registry import create_model
from hpasc.models.spec import ModelSpec
from hpasc.models.runner import check_tiles_for, warn_enlarging
from tests.conftest import run_script

RESIZE = {"mode": "resize", "context": 0, "zero": "outside"}


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
    tile = crop_cell(image, cells, 1, cell_boxes(cells)[1], CropSettings(42, zero="others"))
    expected = image[24:66, 26:68].copy()
    expected[cells[24:66, 26:68] == 2] = 0
    np.testing.assert_array_equal(tile, expected.transpose(2, 0, 1))
    assert (tile[:, 0, 0] != 0).all()  # background is kept, unlike the default crop
    default = crop_cell(image, cells, 1, cell_boxes(cells)[1], CropSettings(42))
    assert (default[:, 0, 0] == 0).all()


def test_their_crop_is_clipped_at_the_image_edge() -> None:
    image, cells = two_cells()
    cells[:] = 0
    cells[0:4, 0:10] = 1  # wide, at the corner: rows grow by 3, 3, the window clips to rows 0:23, cols 0:26
    tile = crop_cell(image, cells, 1, cell_boxes(cells)[1], CropSettings(26, zero="others"))
    square = np.zeros((26, 26, 4), np.uint16)
    square[1:24] = image[0:23, 0:26]  # padded to a square, centred (the odd pixel after)
    np.testing.assert_array_equal(tile, square.transpose(2, 0, 1))


def test_their_crop_takes_no_other_mode_or_context() -> None:
    with pytest.raises(ValueError, match="mode pad, no context"):
        CropSettings(64, mode="resize", zero="others")
    result = run_script("image_cutter.py", "-i", "x", "-m", "y", "-o", "z", "--zero", "others", "--context", "4")
    assert result.returncode == 2 and "--zero others is the 4th place's crop" in result.stderr


def test_recipe_mismatch_compares_how_tiles_look() -> None:
    assert recipe_mismatch(None, {"mode": "pad", "context": 0, "zero": "outside", "factors": {}}) is None
    assert recipe_mismatch(RESIZE, None) == ("expected mode resize, context 0, zero outside; "
                                             "given mode pad, context 0, zero outside")


def recipe_checkpoint(path: Path, recipe: dict | None, tile: int = 32) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), tile, recipe=recipe)
    save_checkpoint(path, make_checkpoint(create_model("efficientnet-b0", 18, tile_size=tile), spec, 1, [], {}))
    return path


def test_an_ensemble_mixing_recipes_cuts_once_per_recipe(tmp_path: Path) -> None:
    recipe_checkpoint(tmp_path / "resize.pt", RESIZE, 32)
    recipe_checkpoint(tmp_path / "resize-small.pt", RESIZE, 24)
    recipe_checkpoint(tmp_path / "pad.pt", None, 48)
    (tmp_path / "e.yaml").write_text("groups: [{members: [resize.pt, pad.pt, resize-small.pt]}]\n")
    loaded = LoadedEnsemble(read_ensemble(tmp_path / "e.yaml"), torch.device("cpu"))
    assert loaded.recipes == (CropSettings(32, "resize"), CropSettings(48, "pad"))
    image, cells = two_cells()
    found = cells_of_image("img", image, cells, None, CutPlan(loaded.recipes))
    np.testing.assert_array_equal(found.tiles[0], crop_cells(image, cells, CropSettings(32, "resize"))[2])
    np.testing.assert_array_equal(found.tiles[1], crop_cells(image, cells, CropSettings(48))[2])
    scores = loaded([torch.from_numpy(t) for t in found.tiles])
    assert scores.shape == (2, 19)
    with pytest.raises(ValueError, match="1 tile batches for 2 recipes"):
        loaded(torch.from_numpy(found.tiles[0]))


@pytest.fixture(scope="module")
def resized(tmp_path_factory) -> Path:
    """A synthetic dataset cut with --mode resize (16 px tiles), its split, a model trained on it."""
    root = tmp_path_factory.mktemp("recipe")
    result = run_script("-m", "hpasc.synthetic", "-o", root / "syn", "-n", 6, "--size", 256, "--seed", 3,
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    for args in (("image_cutter.py", "-i", root / "syn", "-m", root / "syn" / "truth", "-o", root / "dataset",
                  "--size", 16, "--mode", "resize", "--no-progress"),
                 ("data_loader.py", "-i", root / "dataset", "--folds", 2),
                 ("train_me.py", "-i", root / "dataset", "-s", root / "models", "-n", "r", "--epochs", 1,
                  "--epoch-size", 32, "--tile-size", 16, "--workers", 1, "--pretrained", "none", "--no-progress")):
        result = run_script(*args)
        assert result.returncode == 0, result.stderr
    return root


def test_the_store_and_the_checkpoint_record_the_recipe(resized: Path) -> None:
    store = open_cells(resized / "dataset")
    assert {k: store.recipe[k] for k in RESIZE} == RESIZE and store.recipe["factors"]["red_share"] == 0.077
    from hpasc.models.checkpoint import load_checkpoint

    spec = ModelSpec.from_dict(load_checkpoint(resized / "models" / "r-1.pt")["model_spec"])
    assert spec.recipe == store.recipe


def test_infer_cuts_resized_tiles_for_a_resize_checkpoint(resized: Path, tmp_path: Path) -> None:
    result = run_script("infer.py", "-i", resized / "syn", "-e", resized / "models" / "r-1.pt", "-o",
                        tmp_path / "sub.csv", "--backend", "classical", "--workers", 1, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "tiles 16 px resize context 0 zero outside" in result.stderr


def test_tools_refuse_tiles_cut_another_way(resized: Path, tmp_path: Path, caplog) -> None:
    store = open_cells(resized / "dataset")
    check_tiles_for(store, ModelSpec("efficientnet-b0", 4, tuple(range(18)), 16, recipe=RESIZE))
    with pytest.raises(InputError, match="not cut the way the model's training tiles were"):
        check_tiles_for(store, ModelSpec("efficientnet-b0", 4, tuple(range(18)), 16))  # a padded model
    pad = recipe_checkpoint(tmp_path / "pad.pt", None, 16)
    result = run_script("-m", "hpasc.pseudo_label", "--checkpoint", pad, "--dataset", resized / "dataset",
                        "--out", tmp_path / "pseudo", "--no-progress")
    assert result.returncode == 2 and "expected mode pad, context 0, zero outside; given mode resize" in result.stderr
    with caplog.at_level(logging.WARNING):
        warn_enlarging(16, 64, resized / "dataset")
    assert "holds 16 px tiles, the model takes 64 px" in caplog.text
