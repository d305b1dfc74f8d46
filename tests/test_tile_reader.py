"""The training tile reader: worker processes decode each batch straight into a shared-memory slot,
and the batches hold exactly the bytes the main process would read itself (with workers, without
shared memory, at a smaller tile size, over a pass left early); a CPU training run trains the
checkpoint that the code before the reader trained."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hpasc.cells.crop import resize_tile
from hpasc.core import shared_arrays
from hpasc.core.errors import InputError
from hpasc.models.checkpoint import load_checkpoint
from hpasc.cellstore.split import read_split
from hpasc.stages.train.data import TileReader, fixed_batches, load_cells
from tests.conftest import REPO, run_script

DATASET = REPO / "tests" / "data" / "made_before_tile_spec" / "dataset"  # a store of 16 px tiles
BEFORE = REPO / "tests" / "data" / "made_before_tile_reader" / "ref-2.pt"  # see its README.md
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cells():
    return load_cells(read_split(DATASET))


@pytest.fixture(scope="module")
def rows(cells) -> np.ndarray:
    return np.random.default_rng(0).integers(0, len(cells), 200)  # repeats, in random order


def read_all(reader: TileReader, rows: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(tiles.clone(), indices.clone()) for tiles, indices in reader.batches(fixed_batches(rows, 32))]


def assert_same(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (tiles, indices), (want_tiles, want_indices) in zip(got, expected):
        assert torch.equal(indices, want_indices) and torch.equal(tiles, want_tiles)


def test_workers_decode_the_bytes_the_store_holds(cells, rows) -> None:
    with TileReader(cells, 16, 32, 0, CPU) as alone:
        expected = read_all(alone, rows)
    assert len(expected) == 7 and expected[-1][0].shape == (8, 4, 16, 16)
    assert torch.equal(expected[1][0][3], torch.from_numpy(cells.tile(int(rows[35]))))
    with TileReader(cells, 16, 32, 2, CPU) as reader:
        assert len(reader.batches(fixed_batches(rows, 32))) == 7
        for _ in range(2):  # the workers and slots serve pass after pass
            assert_same(read_all(reader, rows), expected)
        left = iter(reader.batches(fixed_batches(rows, 32)))
        next(left)
        left.close()  # a pass left early gives its slots back
        assert len(reader._ring.free) == reader._ring.count
        assert_same(read_all(reader, rows), expected)


def test_smaller_tiles_are_shrunk_in_the_workers(cells, rows) -> None:
    with TileReader(cells, 8, 32, 2, CPU) as reader:
        got = read_all(reader, rows)
    tile = cells.tile(int(rows[0])).transpose(1, 2, 0)
    assert torch.equal(got[0][0][0], torch.from_numpy(resize_tile(tile, 8).transpose(2, 0, 1).copy()))


def test_without_shared_memory_the_tiles_still_arrive(cells, rows, monkeypatch) -> None:
    with TileReader(cells, 16, 32, 0, CPU) as alone:
        expected = read_all(alone, rows)
    monkeypatch.setattr(shared_arrays, "_free_bytes", lambda: 0)  # a container's full /dev/shm
    with TileReader(cells, 16, 32, 2, CPU) as reader:
        assert reader._ring.count and not reader._ring.blocks
        assert_same(read_all(reader, rows), expected)


def test_a_corrupt_tile_stops_the_pass_naming_its_file(cells, tmp_path: Path) -> None:
    copy = tmp_path / "dataset"
    shutil.copytree(DATASET, copy)
    broken = load_cells(read_split(copy))
    chunk = sorted((copy / "images").glob("*/tiles/c.0.0.0.0"))[0]  # the store's first tile of an image
    chunk.write_bytes(chunk.read_bytes()[:40])
    image_id = chunk.parents[1].name
    table = broken.table
    row = int(np.flatnonzero(((table["image_id"] == image_id) & (table["tile_index"] == 0)).to_numpy())[0])
    with TileReader(broken, 16, 4, 2, CPU) as reader, pytest.raises(InputError, match=f"{image_id}.*corrupt tile"):
        read_all(reader, np.array([0, row, 1]))


def test_a_cpu_run_trains_the_checkpoint_the_code_before_the_reader_trained(tmp_path: Path) -> None:
    shutil.copytree(DATASET, tmp_path / "dataset")
    result = run_script("train_me.py", "-i", "dataset", "-s", "models", "-n", "ref", "--arch", "timm:test_efficientnet",
                        "--epochs", "2", "--epoch-size", "64", "-b", "16", "--tile-size", "16", "--workers", "1",
                        "--pretrained", "none", "-p", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    now, before = load_checkpoint(tmp_path / "models" / "ref-2.pt"), load_checkpoint(BEFORE)
    assert now["model_state"].keys() == before["model_state"].keys()
    for name, tensor in before["model_state"].items():
        torch.testing.assert_close(now["model_state"][name], tensor, rtol=0, atol=1e-6, msg=name)
    assert [e["train_loss"] for e in now["metrics"]] == pytest.approx([e["train_loss"] for e in before["metrics"]],
                                                                      rel=0, abs=1e-6)
