"""hpasc.tools.gradcam: a model fine-tuned to spot a green square gets its Grad-CAM heat on the square
wherever the square is; the command line writes a heatmap PNG per cell and class and an index
page linking them, and refuses a missing checkpoint or an unknown cell on one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpasc.cells.tile_spec import TileSpec
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint
from hpasc.models.registry import create_model
from hpasc.models.scoring import prepare_batch
from hpasc.models.spec import ModelSpec
from hpasc.tools.gradcam import cam_for_tile
from tests.conftest import assert_one_line_error, make_dataset, run_script

SIZE, SQUARE = 64, 12
HALF = SIZE // 2
SPEC = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(SIZE))


def synthetic_tile(rng: np.random.Generator, quadrant: int | None) -> np.ndarray:
    """Dim noise in all channels, plus (for class 0) a bright green square inside ``quadrant``
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    tile = rng.integers(0, 6000, size=(4, SIZE, SIZE)).astype(np.uint16)
    if quadrant is not None:
        row, column = divmod(quadrant, 2)
        y, x = (row * HALF + int(rng.integers(2, HALF - SQUARE - 2)),
                column * HALF + int(rng.integers(2, HALF - SQUARE - 2)))
        tile[1, y:y + SQUARE, x:x + SQUARE] = 60000
    return tile


def random_batch(rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` tiles, about half with a square in a random quadrant, and their class-0 targets."""
    positive = rng.random(size) < 0.5
    tiles = np.stack([synthetic_tile(rng, int(rng.integers(4)) if p else None) for p in positive])
    return prepare_batch(torch.from_numpy(tiles), SPEC, "cpu"), torch.from_numpy(positive).float()


@pytest.fixture(scope="module")
def square_model(one_torch_thread) -> torch.nn.Module:
    """An EfficientNet-B0 whose class 0 means "a green square somewhere" (a few seconds on CPU)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model(SPEC.arch, len(SPEC.outputs), tile_size=SIZE).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        inputs, targets = random_batch(rng, 16)
        loss = F.binary_cross_entropy_with_logits(model(inputs)[:, 0], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # The running BatchNorm statistics lag the fast-changing weights of so short a run; recompute
    # them for the final weights so that eval mode sees what training saw.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for _ in range(3):
            model(random_batch(rng, 16)[0])
    return model.eval()


def test_the_model_learned_the_square(square_model) -> None:
    rng = np.random.default_rng(1)
    tiles = np.stack([synthetic_tile(rng, 0), synthetic_tile(rng, None)])
    with torch.no_grad():
        logits = square_model(prepare_batch(torch.from_numpy(tiles), SPEC, "cpu"))
    with_square, without = torch.sigmoid(logits[:, 0])
    assert with_square > 0.5 > without


@pytest.mark.parametrize("quadrant", [0, 3])
def test_the_heat_lies_on_the_square(square_model, quadrant) -> None:
    """Over eight tiles with the square in one quadrant, the heat inside the square exceeds the
    heat outside it on average and on most tiles: one tile's 2×2 map of a briefly trained model is
    too coarse to pass or fail on its own, whatever CPU computes it."""
    rng = np.random.default_rng(2)
    margins = []
    for _ in range(8):
        tile = synthetic_tile(rng, quadrant)
        heat = cam_for_tile(square_model, SPEC, tile, 0, "conv_head")
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert 0.0 <= heat.min() and heat.max() <= 1.0
        square = tile[1] > 50000
        margins.append(heat[square].mean() - heat[~square].mean())
    assert np.mean(margins) > 0.05 and sum(m > 0 for m in margins) >= 5, margins


def test_a_class_without_output_is_refused(square_model) -> None:
    with pytest.raises(ValueError, match="no output for class 18"):
        cam_for_tile(square_model, SPEC, synthetic_tile(np.random.default_rng(3), None), 18)


@pytest.fixture(scope="module")
def dataset_and_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A small cell dataset of 32-pixel tiles and an untrained checkpoint for them."""
    root = make_dataset(tmp_path_factory.mktemp("gradcam"), images=5, size=256, tile=32, seed=5)
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(32))
    torch.manual_seed(0)
    model = create_model(spec.arch, len(spec.outputs), tile_size=spec.tile_size)
    checkpoint = root / "untrained.pt"
    save_checkpoint(checkpoint, make_checkpoint(model, spec, 0, [], {}))
    return root / "dataset", checkpoint


def test_the_command_writes_heatmaps_and_an_index(dataset_and_checkpoint, tmp_path) -> None:
    dataset, checkpoint = dataset_and_checkpoint
    out = tmp_path / "cams"
    result = run_script("-m", "hpasc.commands.gradcam", "--checkpoint", checkpoint, "--dataset", dataset,
                        "--limit", "2", "--out", out, "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)
    assert len({re.sub(r"_c\d+\.png$", "", p.name) for p in pngs}) == 2
    page = (out / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == [p.name for p in pngs]
    assert (out / "manifest.json").is_file()


def test_bad_input_is_one_line(dataset_and_checkpoint, tmp_path) -> None:
    dataset, checkpoint = dataset_and_checkpoint
    assert_one_line_error(run_script("-m", "hpasc.commands.gradcam", "--checkpoint", tmp_path / "none.pt", "--dataset",
                                     dataset, "--limit", "1", "--out", tmp_path / "a", "--no-progress"),
                          "none.pt")
    assert_one_line_error(run_script("-m", "hpasc.commands.gradcam", "--checkpoint", checkpoint, "--dataset", dataset,
                                     "--cells", "nosuchcell_1", "--out", tmp_path / "b", "--device", "cpu",
                                     "--no-progress"), "nosuchcell_1")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
