"""The cell store: atomic per-image writes, merging, crash leftovers, concurrent writers and
shards, reading tiles by index, export to PNGs and its command line."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpasc import cellstore
from hpasc.cells.tile_spec import TileSpec
from hpasc.cellstore import write
from hpasc.cellstore.layout import chunk_file
from hpasc.core.errors import InputError
from hpasc.core.images import composite
from hpasc.core.ownership import writer_id
from hpasc.core.runtime import Shard
from tests.conftest import REPO, assert_one_line_error, run_script

S = 32  # small tiles keep the tests fast; one test uses the default 512
IMAGES = {"img-b": 3, "img-a": 2, "img-empty": 0, "img-d": 4, "img-c": 1, "img-e": 2}


def tile_file(store: cellstore.CellStore, row: int, separator: str = ".") -> Path:
    """The chunk file that holds the tile of ``row`` (its key written with ``separator``)."""
    image_id, index = store.table["image_id"].iat[row], int(store.table["tile_index"].iat[row])
    return chunk_file(store.root / "images" / image_id / "tiles", index, separator)


def make_rows(image_id: str, mask_ids: list[int]) -> pd.DataFrame:
    """Rows as the cutter makes them, in the given (tile) order."""
    n = len(mask_ids)
    return pd.DataFrame({
        "cell_id": pd.Series([f"{image_id}_{m - 1}" for m in mask_ids], dtype="str"),
        "image_id": pd.Series([image_id] * n, dtype="str"),
        "mask_id": np.array(mask_ids, np.int64),
        "y0": np.array([m * 10 for m in mask_ids], np.int64),
        "x0": np.array([m * 7 for m in mask_ids], np.int64),
        "y1": np.array([m * 10 + 50 for m in mask_ids], np.int64),
        "x1": np.array([m * 7 + 40 for m in mask_ids], np.int64),
        "area": np.array([1000 + m for m in mask_ids], np.int64),
        "border": np.array([1.0 / (m + 2) for m in mask_ids], np.float64),
        "outlier": np.array([1.0 if m % 2 else 0.3 for m in mask_ids], np.float64),
        "keep": np.array([m % 3 != 0 for m in mask_ids], bool),
        "labels": pd.Series(["8|5|0" if m % 2 else "" for m in mask_ids], dtype="str"),
    })


def make_image(image_id: str, n: int, size: int = S) -> tuple[np.ndarray, pd.DataFrame]:
    """Deterministic tiles (full 16-bit range, zero outside a disk, one tile all zero) and rows
    whose mask ids are not in tile order."""
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))
    tiles = rng.integers(0, 65536, (n, 4, size, size), dtype=np.uint16)
    yy, xx = np.mgrid[:size, :size]
    tiles[..., (yy - size / 2) ** 2 + (xx - size / 2) ** 2 > (size / 2) ** 2] = 0
    if n > 1:
        tiles[1] = 0
    mask_ids = [int(m) for m in rng.permutation(np.arange(1, n + 1) * 2)]
    return tiles, make_rows(image_id, mask_ids)


def write_all(root: Path, ids: list[str], size: int = S) -> dict[str, np.ndarray]:
    written = {}
    for image_id in ids:
        tiles, rows = make_image(image_id, IMAGES[image_id], size)
        cellstore.write_image(root, image_id, tiles, rows)
        written.update({c: t for c, t in zip(rows["cell_id"], tiles)})
    return written


def _write_group(args: tuple[str, list[str]]) -> int:
    """A worker process writing images (module level so that spawned workers find it)."""
    root, ids = args
    write_all(Path(root), ids)
    return os.getpid()


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a dataset folder by relative path (the tiles and tables, byte for byte)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_is_bit_exact_and_rows_survive(tmp_path: Path) -> None:
    written = write_all(tmp_path, list(IMAGES))
    table = cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)

    assert len(store) == len(table) == sum(IMAGES.values()) == len(written)
    assert store.tile_size == S
    pd.testing.assert_frame_equal(store.table, table)
    for i, cell_id in enumerate(store.table["cell_id"]):
        tile = store[i]
        assert tile.dtype == np.uint16 and tile.shape == (4, S, S) and tile.flags.writeable
        np.testing.assert_array_equal(tile, written[cell_id])
        np.testing.assert_array_equal(store.read(cell_id), written[cell_id])
    assert any(t.max() > 65000 for t in written.values())  # the full 16-bit range survives
    np.testing.assert_array_equal(store[-1], written[store.table["cell_id"].iat[-1]])
    batch = store.tiles(np.array([5, 0, 5]))
    assert batch.shape == (3, 4, S, S)
    for tile, i in zip(batch, [5, 0, 5]):
        np.testing.assert_array_equal(tile, store[i])

    # The rows come back as the cutter gave them (same values and dtypes), plus tile_index.
    for image_id, n in IMAGES.items():
        rows = make_image(image_id, n)[1]
        if n == 0:
            continue
        got = table[table["image_id"] == image_id].sort_values("tile_index")
        assert got["tile_index"].tolist() == list(range(n))
        pd.testing.assert_frame_equal(got.drop(columns="tile_index").reset_index(drop=True), rows)

    # Every image is also a plain zarr v3 array with the same tiles.
    array = cellstore.open_tiles(tmp_path, "img-d")
    assert array.shape == (4, 4, S, S) and array.metadata.zarr_format == 3
    np.testing.assert_array_equal(array[:], make_image("img-d", 4)[0])


def test_default_512_tiles_round_trip(tmp_path: Path) -> None:
    tiles, rows = make_image("big", 2, 512)
    cellstore.write_image(tmp_path, "big", tiles, rows)
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path / "cells.csv")
    assert store.tile_size == 512
    for i in range(2):
        np.testing.assert_array_equal(store.read(store.table["cell_id"].iat[i]),
                                      tiles[store.table["tile_index"].iat[i]])
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["tile_spec"]["size"] == 512 and "tile_size" not in meta and meta["dtype"] == "uint16"
    assert meta["channels"] == ["red", "green", "blue", "yellow"]
    assert meta["codec"]["cname"] == "zstd"


def _nest_chunks(tiles: Path) -> None:
    """Give an image's tiles the layout written before 2026-11-24: chunk keys with "/" separators
    (``c/{k}/0/0/0``), in the files and in the array's metadata."""
    for chunk in tiles.glob("c.*"):
        nested = tiles.joinpath(*chunk.name.split("."))
        nested.parent.mkdir(parents=True)
        chunk.rename(nested)
    meta = json.loads((tiles / "zarr.json").read_text())
    meta["chunk_key_encoding"]["configuration"]["separator"] = "/"
    (tiles / "zarr.json").write_text(json.dumps(meta))


def test_images_written_with_the_earlier_codec_and_layout_read_alongside_new_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before issue 16 the store wrote zstd level 4 in Blosc's automatic blocks, each chunk in
    # folders of its own; such images must keep reading, through this module and through zarr,
    # in a store that new images join.
    earlier = {"name": "blosc", "cname": "zstd", "clevel": 4, "shuffle": "shuffle", "typesize": 2, "blocksize": 0}
    monkeypatch.setattr(write, "CODEC", earlier)
    old_tiles, old_rows = make_image("old", 3)
    cellstore.write_image(tmp_path, "old", old_tiles, old_rows)
    monkeypatch.undo()
    _nest_chunks(tmp_path / "images" / "old" / "tiles")
    new_tiles, new_rows = make_image("new", 2)
    cellstore.write_image(tmp_path, "new", new_tiles, new_rows)
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)
    for image_id, tiles in (("old", old_tiles), ("new", new_tiles)):
        rows = store.table[store.table["image_id"] == image_id]
        for cell_id, k in zip(rows["cell_id"], rows["tile_index"]):
            np.testing.assert_array_equal(store.read(cell_id), tiles[k])
        np.testing.assert_array_equal(cellstore.open_tiles(tmp_path, image_id)[:], tiles)
    assert json.loads((tmp_path / "images" / "old" / "image.json").read_text())["codec"]["clevel"] == 4
    old_row = store.index("old_1")
    k = str(store.table["tile_index"].iat[old_row])
    assert tile_file(store, old_row, "/") == tmp_path / "images" / "old" / "tiles" / "c" / k / "0" / "0" / "0"
    # A new image's tiles are files of one folder, one per tile.
    assert sorted(p.name for p in (tmp_path / "images" / "new" / "tiles").iterdir()) == \
        ["c.0.0.0.0", "c.1.0.0.0", "zarr.json"]
    tile_file(store, old_row, "/").unlink()
    with pytest.raises(InputError, match=rf"old/tiles/c\.{k}\.0\.0\.0: cannot read the tile of cell old_1 "
                                         r"\(No such file"):
        store.read("old_1")


def test_merge_sorts_by_image_then_mask_and_lists_empty_images(tmp_path: Path) -> None:
    write_all(tmp_path, list(IMAGES))
    table = cellstore.merge(tmp_path)
    keys = list(zip(table["image_id"], table["mask_id"]))
    assert keys == sorted(keys)
    assert table["image_id"].unique().tolist() == sorted(i for i, n in IMAGES.items() if n)
    assert (tmp_path / "cells.csv").read_text() == table.to_csv(index=False, lineterminator="\n")
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["images"] == dict(sorted(IMAGES.items())) and meta["n_cells"] == len(table)
    assert cellstore.image_done(tmp_path, "img-empty")
    assert cellstore.done_images(tmp_path) == set(IMAGES)
    assert not cellstore.image_done(tmp_path, "img-missing")


def test_a_table_that_only_has_empty_images_merges(tmp_path: Path) -> None:
    cellstore.write_image(tmp_path, "none", np.zeros((0, 4, S, S), np.uint16),
                          make_rows("none", []))
    table = cellstore.merge(tmp_path)
    assert len(table) == 0 and "tile_index" in table.columns
    assert len(cellstore.open_cells(tmp_path)) == 0


def test_the_store_reads_by_tile_index_so_a_filtered_table_still_matches(tmp_path: Path) -> None:
    written = write_all(tmp_path, ["img-d", "img-b"])
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)
    subset = store.table[store.table["keep"]].iloc[::-1].reset_index(drop=True)
    filtered = cellstore.CellStore(tmp_path, subset, TileSpec(S))
    assert 0 < len(filtered) < len(store)
    for i, cell_id in enumerate(subset["cell_id"]):
        np.testing.assert_array_equal(filtered[i], written[cell_id])


@pytest.mark.parametrize("change, message", [
    (lambda t, r: (t.astype(np.float32), r), "uint16"),
    (lambda t, r: (t[:, :3], r), r"\(N, 4, S, S\)"),
    (lambda t, r: (t[..., :-1], r), r"\(N, 4, S, S\)"),
    (lambda t, r: (t[:1], r), "2 rows for 1 tiles"),
    (lambda t, r: (t, r.drop(columns="mask_id")), "mask_id"),
    (lambda t, r: (t, r.assign(tile_index=0)), "tile_index"),
    (lambda t, r: (t, r.assign(image_id="other")), "other image ids"),
    (lambda t, r: (t, r.assign(cell_id="same")), "unique"),
    (lambda t, r: (t, r.assign(mask_id=r["mask_id"].astype(float))), "integers"),
])
def test_write_image_refuses_broken_arguments(tmp_path: Path, change, message: str) -> None:
    tiles, rows = change(*make_image("img-a", 2))
    with pytest.raises(ValueError, match=message):
        cellstore.write_image(tmp_path, "img-a", tiles, rows)
    assert cellstore.done_images(tmp_path) == set()


@pytest.mark.parametrize("image_id", ["", ".hidden", "a/b", "..", "x" * 200])
def test_write_image_refuses_unusable_image_ids(tmp_path: Path, image_id: str) -> None:
    with pytest.raises(ValueError, match="image id"):
        cellstore.write_image(tmp_path, image_id, np.zeros((0, 4, S, S), np.uint16),
                              make_rows(image_id, []))


def test_rewriting_an_image_replaces_it(tmp_path: Path) -> None:
    tiles, rows = make_image("img-a", 2)
    cellstore.write_image(tmp_path, "img-a", tiles, rows)
    cellstore.write_image(tmp_path, "img-a", 65535 - tiles, rows.assign(area=7))
    assert os.listdir(tmp_path / "images") == ["img-a"]  # nothing left aside
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)
    assert store.table["area"].tolist() == [7, 7]
    for i in range(2):
        np.testing.assert_array_equal(store[i], 65535 - tiles[store.table["tile_index"].iat[i]])


def test_tile_size_must_agree(tmp_path: Path) -> None:
    cellstore.check_cut(tmp_path, TileSpec(512))  # an empty folder takes any size
    write_all(tmp_path, ["img-a"])
    cellstore.check_cut(tmp_path, TileSpec(S))
    with pytest.raises(InputError, match=f"holds other tiles \\(expected size {S}; given size 260\\)"):
        cellstore.check_cut(tmp_path, TileSpec(260))
    tiles, rows = make_image("img-b", 3, 16)
    cellstore.write_image(tmp_path, "img-b", tiles, rows)
    with pytest.raises(InputError, match=f"images were cut differently \\(expected size {S}; given size 16\\)"):
        cellstore.merge(tmp_path)


def test_the_tile_spec_is_kept_and_must_agree(tmp_path: Path) -> None:
    spec = TileSpec(S, mode="resize")
    tiles, rows = make_image("img-a", 2, S)
    cellstore.write_image(tmp_path, "img-a", tiles, rows, spec)
    cellstore.check_cut(tmp_path, spec)
    with pytest.raises(InputError, match="expected mode resize; given mode pad\\).*--mode/--context/--zero/--margin"):
        cellstore.check_cut(tmp_path, TileSpec(S))
    cellstore.merge(tmp_path)
    assert cellstore.open_cells(tmp_path).tile_spec == spec
    tiles, rows = make_image("img-b", 2, S)
    cellstore.write_image(tmp_path, "img-b", tiles, rows, TileSpec(S, mode="resize", context=8))
    with pytest.raises(InputError, match="cut differently \\(expected context 0; given context 8\\)"):
        cellstore.merge(tmp_path)
    with pytest.raises(ValueError, match="16 px tiles described by a 32 px tile spec"):
        cellstore.write_image(tmp_path, "img-c", *make_image("img-c", 1, 16), TileSpec(32))


# ---------------------------------------------------------------------------------------------
# Crashes and temporary folders

CRASH = """
import os, sys
from pathlib import Path
from hpasc.cellstore import write as cellstore
from tests.test_cellstore import make_image
root, image_id, when = sys.argv[1:]
if when == "before-rename":
    cellstore._install = lambda *args: os._exit(3)
else:  # half-written: the tiles are there, the table and the metadata are not
    original = cellstore._write_tile_array
    def crash(*args):
        original(*args)
        os._exit(3)
    cellstore._write_tile_array = crash
tiles, rows = make_image(image_id, 3)
cellstore.write_image(Path(root), image_id, tiles, rows)
"""


def temporary_folders(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "images").iterdir() if p.name.startswith("."))


def test_crash_leftovers_are_ignored_cleaned_and_the_image_redone(tmp_path: Path) -> None:
    write_all(tmp_path, ["img-a"])
    for image_id, when in [("img-b", "before-rename"), ("img-c", "half-written")]:
        result = run_script("-c", CRASH, tmp_path, image_id, when)
        assert result.returncode == 3, result.stderr
    leftovers = temporary_folders(tmp_path)
    assert len(leftovers) == 2 and all("~" in name for name in leftovers)
    assert cellstore.done_images(tmp_path) == {"img-a"}
    assert not cellstore.image_done(tmp_path, "img-b")

    # Another machine's folders: young ones may still be written; old ones are abandoned.
    foreign_young = tmp_path / "images" / ".img-x~000000000000~1~abcd.tmp"
    foreign_old = tmp_path / "images" / ".img-y~000000000000~1~abcd.tmp"
    for folder in (foreign_young, foreign_old):
        (folder / "tiles").mkdir(parents=True)
        (folder / "tiles" / "zarr.json").write_text("{}")
    hours_ago = time.time() - 2 * 3600
    for path in (foreign_old, foreign_old / "tiles", foreign_old / "tiles" / "zarr.json"):
        os.utime(path, (hours_ago, hours_ago))

    table = cellstore.merge(tmp_path)  # the crashed writers' pids are gone: cleaned at once
    assert set(table["image_id"]) == {"img-a"}
    assert temporary_folders(tmp_path) == [foreign_young.name]
    assert len(cellstore.open_cells(tmp_path)) == 2

    written = write_all(tmp_path, ["img-b", "img-c"])  # the re-run redoes them
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)
    assert set(store.table["image_id"]) == {"img-a", "img-b", "img-c"}
    np.testing.assert_array_equal(store.read("img-c_1"), written["img-c_1"])


def test_a_live_writers_folder_is_kept(tmp_path: Path) -> None:
    write_all(tmp_path, ["img-a"])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        name = f".img-b~{writer_id()}~{sleeper.pid}~0000.tmp"
        (tmp_path / "images" / name).mkdir()
        cellstore.merge(tmp_path)
        assert temporary_folders(tmp_path) == [name]
        cellstore.merge(tmp_path, stale_after=-1)  # a pid can be reused: age still counts
        assert temporary_folders(tmp_path) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_writer_whose_folder_was_cleaned_installs_nothing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    original = write._fsync_tree

    def cleaned_meanwhile(folder: Path) -> None:
        original(folder)
        shutil.rmtree(folder)  # what merge does to a folder it judges abandoned
        (folder / "tiles").mkdir(parents=True)  # and a late write recreating part of it

    monkeypatch.setattr(write, "_fsync_tree", cleaned_meanwhile)
    tiles, rows = make_image("img-a", 2)
    with pytest.raises(FileNotFoundError):
        cellstore.write_image(tmp_path, "img-a", tiles, rows)
    assert cellstore.done_images(tmp_path) == set() and temporary_folders(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Concurrent writers and shards


def test_concurrent_writers_equal_a_sequential_run(tmp_path: Path) -> None:
    ids = list(IMAGES)
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    write_all(sequential, ids)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pids = pool.map(_write_group, [(str(parallel), [i]) for i in ids], chunksize=1)
    assert len(set(pids)) > 1  # really several processes
    pd.testing.assert_frame_equal(cellstore.merge(parallel), cellstore.merge(sequential))
    assert store_files(parallel) == store_files(sequential)


def test_shards_merged_equal_one_run_and_merging_copies_no_tile(tmp_path: Path, caplog) -> None:
    ids = sorted(IMAGES)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    write_all(single, ids)
    cellstore.merge(single)
    # Two shard processes write into the same folder at once, each merging when it is done.
    code = ("import sys; from pathlib import Path; from hpasc import cellstore; "
            "from tests.test_cellstore import write_all; "
            "write_all(Path(sys.argv[1]), sys.argv[2:]); cellstore.merge(Path(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shards = [subprocess.Popen([sys.executable, "-c", code, str(sharded), *Shard(k, 2).select(ids)],
                               cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for k in range(2)]
    for process in shards:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    cellstore.merge(sharded)  # after the last shard: a merge sees every image
    inodes = {p: p.stat().st_ino for p in (sharded / "images").rglob("*") if p.is_file()}
    table = cellstore.merge(sharded)
    assert {p: p.stat().st_ino for p in (sharded / "images").rglob("*") if p.is_file()} == inodes
    assert store_files(sharded) == store_files(single)
    pd.testing.assert_frame_equal(table, cellstore.open_cells(single).table)

    # A shard that finishes after the merge: open_cells says so and keeps the merged snapshot.
    extra, rows = make_image("img-late", 2)
    cellstore.write_image(sharded, "img-late", extra, rows)
    with caplog.at_level(logging.WARNING):
        store = cellstore.open_cells(sharded)
    assert "1 complete image(s) are not in cells.csv" in caplog.text
    assert len(store) == len(table)


# ---------------------------------------------------------------------------------------------
# Opening and reading


def test_open_cells_errors_are_one_line(tmp_path: Path) -> None:
    def message(path: Path) -> str:
        with pytest.raises(InputError) as error:
            cellstore.open_cells(path)
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "no such cell dataset folder" in message(tmp_path / "nowhere")
    assert "not a cell dataset" in message(tmp_path)
    write_all(tmp_path, ["img-a", "img-b"])
    text = message(tmp_path)
    assert "no cells.csv yet" in text and "2 complete images" in text and "merge" in text
    cellstore.merge(tmp_path)
    (tmp_path / "store.json").unlink()
    assert "store.json" in message(tmp_path)
    cellstore.merge(tmp_path)
    shutil.rmtree(tmp_path / "images" / "img-b")
    assert "missing" in message(tmp_path) and "img-b" in message(tmp_path)
    cellstore.merge(tmp_path)
    (tmp_path / "cells.csv").write_text("cell_id,image_id\nx,y\n")
    assert "missing column(s) mask_id, tile_index" in message(tmp_path)
    with pytest.raises(InputError, match="no complete images"):
        cellstore.merge(tmp_path / "empty")


def test_bad_indices_and_damaged_tiles(tmp_path: Path) -> None:
    write_all(tmp_path, ["img-d"])
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)
    with pytest.raises(IndexError):
        store[len(store)]
    with pytest.raises(TypeError):
        store["img-d_1"]
    with pytest.raises(KeyError, match="no cell 'nope'"):
        store.read("nope")
    first, second = store.table["cell_id"][:2]
    assert store.require([second, first]) == [1, 0]
    with pytest.raises(InputError, match=r"no cell\(s\) a, b, c and 1 more"):
        store.require([first, "a", "b", "c", "d"])
    path = tile_file(store, 2)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match="corrupt tile"):
        store[2]
    path.unlink()
    with pytest.raises(InputError, match="cannot read the tile"):
        store[2]


def _first_tiles(store: cellstore.CellStore) -> list[bytes]:
    return [store[i].tobytes() for i in range(len(store))]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_store_works_in_worker_processes(tmp_path: Path, method: str) -> None:
    write_all(tmp_path, ["img-b", "img-d"])
    cellstore.merge(tmp_path)
    store = cellstore.open_cells(tmp_path)
    expected = _first_tiles(store)  # the parent reads first, as a DataLoader's main process may
    assert len(pickle.dumps(store)) < 100_000
    with multiprocessing.get_context(method).Pool(2) as pool:
        assert pool.map(_first_tiles, [store, store]) == [expected, expected]


# ---------------------------------------------------------------------------------------------
# Export


def one_channel_store(root: Path, signal: dict[str, int]) -> cellstore.CellStore:
    """A store with one tile per entry: a textured disk in only that channel."""
    channels = ["red", "green", "blue", "yellow"]
    yy, xx = np.mgrid[:S, :S]
    disk = (yy - S / 2) ** 2 + (xx - S / 2) ** 2 < (S / 3) ** 2
    tiles = np.zeros((len(signal), 4, S, S), np.uint16)
    for k, channel in enumerate(signal):
        tiles[k, channels.index(channel)] = disk * (signal[channel] + 7 * xx).astype(np.uint16)
    rows = make_rows("exp", list(range(1, len(signal) + 1)))
    cellstore.write_image(root, "exp", tiles, rows)
    cellstore.merge(root)
    return cellstore.open_cells(root)


def test_export_shows_each_channel_in_its_colour(tmp_path: Path) -> None:
    store = one_channel_store(tmp_path / "d", {"green": 3000, "blue": 20000, "yellow": 900, "red": 50})
    ids = store.table["cell_id"].tolist()
    paths = cellstore.export_pngs(store, ids, tmp_path / "png", raw=True)
    assert [p.name for p in paths[:5]] == ["exp_0.png", *(f"exp_0_{c}.png" for c in
                                                          ("red", "green", "blue", "yellow"))]
    assert len(paths) == 20 and all(p.is_file() for p in paths)
    colours = {}
    for cell_id in ids:
        bgr = cv2.imread(str(tmp_path / "png" / f"{cell_id}.png"), cv2.IMREAD_UNCHANGED)
        assert bgr.dtype == np.uint8 and bgr.shape == (S, S, 3)
        colours[cell_id] = bgr[..., ::-1].reshape(-1, 3).max(axis=0)  # brightest R, G, B
        for k, channel in enumerate(("red", "green", "blue", "yellow")):
            raw = cv2.imread(str(tmp_path / "png" / f"{cell_id}_{channel}.png"), cv2.IMREAD_UNCHANGED)
            assert raw.dtype == np.uint16
            np.testing.assert_array_equal(raw, store.read(cell_id)[k])
    green, blue, yellow, red = (colours[i] for i in ids)
    assert green[1] == 255 and green[0] == green[2] == 0
    assert blue[2] > 150 and blue[0] == blue[1] == 0
    assert yellow[0] > 80 and yellow[0] == yellow[1] and yellow[2] == 0
    assert red[0] > 120 and red[1] == red[2] == 0
    with pytest.raises(KeyError):
        cellstore.export_pngs(store, ["exp_0", "nope"], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_composite_contrast_follows_the_percentile() -> None:
    tile = np.zeros((4, 8, 8), np.uint16)
    tile[1, :4] = 100
    tile[1, 4:] = 10000  # half dim, half bright protein
    assert composite(tile, 99.5)[0, 0, 1] < 10
    assert composite(tile, 40.0)[0, 0, 1] == 255
    assert composite(np.zeros((4, 8, 8), np.uint16)).max() == 0


def test_export_command_line(tmp_path: Path) -> None:
    store = one_channel_store(tmp_path / "d", {"green": 3000, "red": 5000, "blue": 100})
    out = tmp_path / "png"
    result = run_script("-m", "hpasc.commands.cellstore", "export", "--dataset", tmp_path / "d",
                        "--cells", "exp_2", "exp_0", "--out", out, "--raw")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"exp_{k}{c}.png" for k in (0, 2) for c in ("", "_red", "_green", "_blue", "_yellow")])
    result = run_script("-m", "hpasc.commands.cellstore", "export", "--dataset", tmp_path / "d",
                        "--limit", "2", "--out", tmp_path / "limited", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "limited").iterdir()) == ["exp_0.png", "exp_1.png"]
    assert len(store) == 3

    assert_one_line_error(run_script("-m", "hpasc.commands.cellstore", "export", "--dataset", tmp_path / "d",
                                     "--cells", "exp_9", "--out", out), "no cell(s) exp_9")
    assert_one_line_error(run_script("-m", "hpasc.commands.cellstore", "export", "--dataset", tmp_path / "x",
                                     "--limit", "1", "--out", out), "no such cell dataset folder")
    both = run_script("-m", "hpasc.commands.cellstore", "export", "--dataset", tmp_path / "d", "--limit", "1",
                      "--cells", "exp_0", "--out", out)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    help_text = run_script("-m", "hpasc.commands.cellstore", "export", "--help").stdout
    for flag in ("--dataset", "--cells", "--limit", "--out", "--raw", "--percentile", "--no-progress"):
        assert flag in help_text


def test_merge_command_line(tmp_path: Path) -> None:
    write_all(tmp_path, ["img-a", "img-c"])
    result = run_script("-m", "hpasc.commands.cellstore", "merge", "--dataset", tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(cellstore.open_cells(tmp_path)) == 3
    assert_one_line_error(run_script("-m", "hpasc.commands.cellstore", "merge", "--dataset", tmp_path / "x"),
                          "no such cell dataset folder")
    top = run_script("-m", "hpasc.commands.cellstore", "--help")
    assert top.returncode == 0 and "export" in top.stdout and "merge" in top.stdout
    assert run_script("-m", "hpasc.commands.cellstore", "frobnicate").returncode == 2
