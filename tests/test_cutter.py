"""image_cutter.py end to end on synthetic images with known masks, as real subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpasc.cellstore import open_cells
from hpasc.core.classes import read_label_table
from hpasc.core.image_folder import scan_images
from hpasc.core.images import read_label_image, write_channel, write_label_image
from hpasc.cellstore.split import read_split
from tests.conftest import REPO, assert_one_line_error, run_script

SIZE = 64  # small tiles keep the tests fast; the cutting code is the same for 512


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    made = run_script("-m", "hpasc.commands.synthetic", "-o", root, "-n", "6", "--size", "384",
                      "--seed", "2", "--no-progress")
    assert made.returncode == 0, made.stderr
    return root


def cutter(*args: str | Path, cwd: Path = REPO):
    return run_script("image_cutter.py", *args, "--no-progress", cwd=cwd)


def test_every_cell_gets_a_row_and_a_tile(synthetic: Path, tmp_path: Path) -> None:
    truth = synthetic / "truth"
    result = cutter("-i", synthetic, "-m", truth, "-n", truth / "nuclei", "-o", tmp_path / "ds",
                    "--size", SIZE, "--workers", "2")
    assert result.returncode == 0, result.stderr

    store = open_cells(tmp_path / "ds")
    table = store.table
    cells = pd.read_csv(truth / "cells.csv", dtype={"Label": str})
    assert len(store) == len(table) == len(cells)
    assert sorted(table["cell_id"]) == sorted(f"{i}_{m - 1}" for i, m in zip(cells["ID"], cells["mask_id"]))
    labels = read_label_table(synthetic / "train.csv")
    for row in table.itertuples():
        assert row.labels == "|".join(map(str, labels[row.image_id]))
    for index in range(0, len(store), 7):
        row = table.iloc[index]
        tile = store[index]
        assert tile.shape == (4, SIZE, SIZE) and tile.dtype == np.uint16
        mask = read_label_image(truth / f"{row.image_id}.png")
        assert row.area == (mask == row.mask_id).sum()
        assert mask[row.y0:row.y1, row.x0:row.x1].any() and tile[2].any()
    assert (store.tiles(range(len(store))) % 257).any()  # 16-bit precision survives


def test_border_and_outlier_factors(synthetic: Path, tmp_path: Path) -> None:
    image_id = scan_images(synthetic).ids[0]
    images = tmp_path / "images"
    masks, nuclei_dir = tmp_path / "cells", tmp_path / "nuclei"
    image = scan_images(synthetic).read(image_id)
    cells = read_label_image(synthetic / "truth" / f"{image_id}.png").astype(np.uint16)
    nuclei = read_label_image(synthetic / "truth" / "nuclei" / f"{image_id}.png").astype(np.uint16)
    # A "cell" over empty background with a bright blue blob as its nucleus: debris.
    free = np.argwhere(cells[40:-40, 40:-40] == 0)[0] + 40
    box = (slice(free[0] - 12, free[0] + 12), slice(free[1] - 12, free[1] + 12))
    debris_id = int(cells.max()) + 1
    cells[box] = np.where(cells[box] == 0, debris_id, cells[box])
    yy, xx = np.ogrid[:cells.shape[0], :cells.shape[1]]
    blob = (yy - free[0]) ** 2 + (xx - free[1]) ** 2 <= 25  # round: not a cut nucleus
    nuclei[blob] = debris_id
    image[blob, 2] = 60000
    for index, channel in enumerate(("red", "green", "blue", "yellow")):
        write_channel(images / f"{image_id}_{channel}.png", image[..., index])
    write_label_image(masks / f"{image_id}.png", cells)
    write_label_image(nuclei_dir / f"{image_id}.png", nuclei)
    pd.DataFrame({"ID": [image_id], "Label": ["0"]}).to_csv(tmp_path / "train.csv", index=False)

    result = cutter("-i", images, "-m", masks, "-n", nuclei_dir, "-o", tmp_path / "ds",
                    "--labels", tmp_path / "train.csv", "--size", SIZE)

    assert result.returncode == 0, result.stderr
    table = open_cells(tmp_path / "ds").table.set_index("mask_id")
    assert table.loc[debris_id, "outlier"] == pytest.approx(0.001)
    assert not table.loc[debris_id, "keep"]
    height, width = cells.shape
    for mask_id, row in table.drop(index=debris_id).iterrows():
        ys, xs = np.nonzero(nuclei == mask_id)
        on_edge = ys.min() == 0 or xs.min() == 0 or ys.max() == height - 1 or xs.max() == width - 1
        if not on_edge:
            assert row.border == 1.0, mask_id
    cut = [row.border for mask_id, row in table.iterrows()
           if (nuclei == mask_id).any() and row.border < 1]
    assert cut, "no cell cut by the image border got a border factor below 1"
    assert not table.loc[table["border"] < 1, "keep"].any()


def test_crash_and_rerun_leaves_a_complete_store(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    truth = synthetic / "truth"
    command = [sys.executable, str(REPO / "image_cutter.py"), "-i", str(synthetic), "-m", str(truth),
               "-o", str(out), "--size", str(SIZE), "--workers", "1", "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = [p for p in (out / "images").glob("*") if not p.name.startswith(".")] \
            if (out / "images").is_dir() else []
        if done:
            break
        time.sleep(0.05)
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    result = cutter("-i", synthetic, "-m", truth, "-o", out, "--size", SIZE)

    assert result.returncode == 0, result.stderr
    if killed:
        assert "already cut, skipped" in result.stderr
    table = open_cells(out).table
    cells = pd.read_csv(truth / "cells.csv")
    assert len(table) == len(cells) and table["cell_id"].is_unique
    store = open_cells(out)
    assert store.tiles(range(len(store))).shape == (len(cells), 4, SIZE, SIZE)


def test_shards_merged_equal_a_single_run(synthetic: Path, tmp_path: Path) -> None:
    truth = synthetic / "truth"
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert cutter("-i", synthetic, "-m", truth, "-o", single, "--size", SIZE).returncode == 0
    for shard in ("0/2", "1/2"):
        result = cutter("-i", synthetic, "-m", truth, "-o", sharded, "--size", SIZE, "--shard", shard)
        assert result.returncode == 0, result.stderr
    one, two = open_cells(single), open_cells(sharded)
    pd.testing.assert_frame_equal(one.table, two.table)
    np.testing.assert_array_equal(one.tiles(range(len(one))), two.tiles(range(len(two))))


def test_seed_command_lines(synthetic: Path, tmp_path: Path) -> None:
    """segmentator.py → image_cutter.py → data_loader.py exactly as the 4th place ran them."""
    shutil.copytree(synthetic, tmp_path / "train", ignore=shutil.ignore_patterns("truth", "*.csv"))
    shutil.copy(synthetic / "train.csv", tmp_path / "train.csv")  # the Kaggle layout
    env = {**os.environ, "HPASC_CACHE": str(tmp_path / "no-weights")}
    for command in (["segmentator.py", "-i", "train", "-n", "train_nuclei", "-c", "train_cells",
                     "-b", "128"],
                    ["image_cutter.py", "-i", "train", "-m", "train_cells", "-o", "dataset"],
                    ["data_loader.py", "-i", "dataset"]):
        result = run_script(REPO / command[0], *command[1:], "--no-progress", cwd=tmp_path, env=env)
        assert result.returncode == 0, (command, result.stderr)
    store = open_cells(tmp_path / "dataset")
    assert store.tile_size == 512 and len(store) > 20
    split = read_split(tmp_path / "dataset")
    kept = store.table.loc[store.table["keep"], "image_id"].unique()
    assert sorted(split.train_images + split.validation_images) == sorted(kept)


def test_bad_input(synthetic: Path, tmp_path: Path) -> None:
    assert_one_line_error(cutter("-i", tmp_path / "absent", "-m", tmp_path, "-o", tmp_path / "o"),
                          "does not exist")
    empty = tmp_path / "images"
    empty.mkdir()
    assert_one_line_error(cutter("-i", empty, "-m", tmp_path, "-o", tmp_path / "o"), "--no-labels")
    images = tmp_path / "some"
    shutil.copytree(synthetic, images, ignore=shutil.ignore_patterns("truth"))
    first = scan_images(images).ids[0]
    masks = tmp_path / "masks"
    shutil.copytree(synthetic / "truth", masks, ignore=shutil.ignore_patterns("nuclei", "*.csv"))
    (masks / f"{first}.png").unlink()
    result = cutter("-i", images, "-m", masks, "-o", tmp_path / "o", "--size", SIZE)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{first}: failed: {first}: no mask" in result.stderr
    assert first not in set(open_cells(tmp_path / "o").table["image_id"])
    # A masks folder that is not there is unusable input (exit 2, one line), not a failure per image.
    assert_one_line_error(cutter("-i", images, "-m", tmp_path / "no_masks", "-o", tmp_path / "o2", "--size", SIZE),
                          "no_masks: no such masks folder")
    assert not (tmp_path / "o2").exists()


def test_masks_named_with_a_suffix(synthetic: Path, tmp_path: Path) -> None:
    """HPA's masks are {ID}_cellmask.png: without --mask-suffix nothing can be cut, which is one
    line naming the name looked for (exit 2, no output); with it, the cut runs (issue 38, item 2)."""
    images, truth = synthetic, synthetic / "truth"
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in truth.glob("*.png"):
        shutil.copy(path, masks / f"{path.stem}_cellmask.png")
    refused = cutter("-i", images, "-m", masks, "-o", tmp_path / "o", "--size", SIZE, "--no-labels")
    assert_one_line_error(refused, "no cell mask of any of the", "looked for {ID}.png", "--mask-suffix _cellmask")
    assert not (tmp_path / "o").exists()
    cut = cutter("-i", images, "-m", masks, "--mask-suffix", "_cellmask", "-o", tmp_path / "o", "--size", SIZE,
                 "--no-labels")
    assert cut.returncode == 0, cut.stderr
    assert len(open_cells(tmp_path / "o").table) > 0


def test_open_cells_is_public(synthetic: Path, tmp_path: Path) -> None:
    import hpasc

    truth = synthetic / "truth"
    assert cutter("-i", synthetic, "-m", truth, "-o", tmp_path / "ds", "--size", SIZE).returncode == 0
    store = hpasc.open_cells(tmp_path / "ds")
    assert len(store) == len(store.table) and store[0].shape == (4, SIZE, SIZE)
