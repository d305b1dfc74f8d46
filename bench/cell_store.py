"""Random-order cell tile reads on one core: the cell store against four 16-bit PNGs per cell.

Tiles: 512² cells cut by ``hpasc.cells.crop`` (pad mode, pixels outside the cell zeroed) from the real
HPA samples in tests/data/hpa_samples (8-bit ×257) with their HPA masks, topped up to ``--tiles``
with cells of ``hpasc.tools.synthetic`` images (16-bit). Each layout is written into a temporary folder
and then read in one fixed random order (files in the page cache for every layout alike); the
best of ``--passes`` passes is reported. One core: the process is pinned to one CPU and Blosc
runs single-threaded.

Layouts: the store (``hpasc.cellstore`` with the chosen codec, and with alternative Blosc
settings), the same arrays read through zarr's API (array kept open, or opened per read as on a
cache miss), a sharded variant (one file per image), and the 4th-place way: ``{cell}_{channel}.png``
16-bit, read with ``cv2.imread(IMREAD_UNCHANGED)`` ×4 and stacked.

Usage: python bench/cell_store.py [--tiles 200] [--passes 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpasc import cellstore  # noqa: E402
from hpasc.cells.crop import crop_cells  # noqa: E402
from hpasc.cells.tile_spec import TileSpec  # noqa: E402
from hpasc.cellstore import write as cellstore_write  # noqa: E402
from hpasc.cellstore.layout import chunk_file  # noqa: E402
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.core.images import CHANNELS, read_label_image  # noqa: E402
from hpasc.tools.synthetic import synthesize_image  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "hpa_samples"
SIZE = 512
# Blosc settings tried as alternatives to cellstore.CODEC (name, cname, clevel, shuffle, blocksize;
# blocksize 0: Blosc chooses, as the store did before issue 16).
AUTO, BLOCK = 0, 1 << 18
ALTERNATIVES = [("zstd L4 byte-shuffle, auto blocks (before)", "zstd", 4, "shuffle", AUTO),
                ("zstd L1 byte-shuffle, auto blocks", "zstd", 1, "shuffle", AUTO),
                ("zstd L2 byte-shuffle", "zstd", 2, "shuffle", BLOCK),
                ("zstd L3 byte-shuffle", "zstd", 3, "shuffle", BLOCK),
                ("zstd L5 byte-shuffle", "zstd", 5, "shuffle", BLOCK),
                ("zstd L1 bit-shuffle", "zstd", 1, "bitshuffle", BLOCK),
                ("zstd L5 bit-shuffle, auto blocks", "zstd", 5, "bitshuffle", AUTO),
                ("lz4 L5 byte-shuffle", "lz4", 5, "shuffle", BLOCK)]


def cell_tiles(count: int) -> list[tuple[str, np.ndarray, str]]:
    """(image id, tiles N×4×S×S, source) per image, ``count`` tiles in all."""
    images, total = [], 0
    folder = scan_images(REAL / "images")
    for image_id in folder.ids:
        cells = read_label_image(REAL / "masks" / f"{image_id}_cellmask.png")
        tiles = crop_cells(folder.read(image_id), cells, TileSpec(SIZE))[2][: count - total]
        images.append((image_id, tiles, "real"))
        total += len(tiles)
    seed = 0
    while total < count:
        synthetic = synthesize_image((2048, 2048), np.random.default_rng(seed))
        tiles = crop_cells(synthetic.image, synthetic.cells, TileSpec(SIZE))[2][: count - total]
        images.append((f"synthetic-{seed}", tiles, "synthetic"))
        total, seed = total + len(tiles), seed + 1
    return images


def rows_for(image_id: str, n: int) -> pd.DataFrame:
    return pd.DataFrame({"cell_id": [f"{image_id}_{k}" for k in range(n)], "image_id": image_id,
                         "mask_id": np.arange(1, n + 1)})


def write_store(root: Path, images: list, codec: dict) -> float:
    """Write every image with ``codec``; returns the write time per tile (s)."""
    saved = cellstore_write.CODEC
    cellstore_write.CODEC = codec
    try:
        start = time.perf_counter()
        for image_id, tiles, _ in images:
            cellstore.write_image(root, image_id, tiles, rows_for(image_id, len(tiles)))
        seconds = time.perf_counter() - start
    finally:
        cellstore_write.CODEC = saved
    cellstore.merge(root)
    return seconds / sum(len(t) for _, t, _ in images)


def write_sharded(root: Path, images: list) -> None:
    codec = {k: v for k, v in cellstore.CODEC.items() if k != "name"}
    for image_id, tiles, _ in images:
        array = zarr.create_array(LocalStore(root / image_id), shape=tiles.shape, dtype="uint16",
                                  chunks=(1, 4, SIZE, SIZE), shards=tiles.shape,
                                  compressors=BloscCodec(**codec), fill_value=0)
        array[:] = tiles


def write_pngs(root: Path, images: list) -> None:
    root.mkdir(parents=True)
    for image_id, tiles, _ in images:
        for k, tile in enumerate(tiles):
            for channel, plane in zip(CHANNELS, tile):
                cv2.imwrite(str(root / f"{image_id}_{k}_{channel}.png"), plane)


def read_png(root: Path, image_id: str, k: int) -> np.ndarray:
    return np.stack([cv2.imread(str(root / f"{image_id}_{k}_{c}.png"), cv2.IMREAD_UNCHANGED)
                     for c in CHANNELS])


def rate(read: Callable[[int], np.ndarray], order: np.ndarray, passes: int) -> float:
    """Tiles per second, best of ``passes`` passes in ``order``."""
    best = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        for i in order:
            read(i)
        best = max(best, len(order) / (time.perf_counter() - start))
    return best


def folder_bytes(root: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in root.rglob(pattern) if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=200, help="cell tiles to store and read")
    parser.add_argument("--passes", type=int, default=3, help="read passes (the best is shown)")
    args = parser.parse_args()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    blosc.set_nthreads(1)
    cv2.setNumThreads(1)
    zarr.config.set({"threading.max_workers": 1})

    images = cell_tiles(args.tiles)
    cells = [(image_id, k, source) for image_id, tiles, source in images for k in range(len(tiles))]
    order = np.random.default_rng(0).permutation(len(cells))
    sources = {s: np.array([c[2] == s for c in cells]) for s in ("real", "synthetic")}
    print(f"{len(cells)} tiles 4x{SIZE}x{SIZE} uint16 from {len(images)} images "
          f"({sources['real'].sum()} real HPA cells, {sources['synthetic'].sum()} synthetic); "
          f"1 core (cpu {core}), Blosc 1 thread, best of {args.passes} passes in random order\n")

    results = []  # (layout, reads/s, bytes/tile, real bytes/tile, synthetic bytes/tile, write ms)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pngs = tmp / "png"
        write_pngs(pngs, images)
        png_sizes = np.array([folder_bytes(pngs, f"{i}_{k}_*.png") for i, k, _ in cells])
        png_rate = rate(lambda i: read_png(pngs, *cells[i][:2]), order, args.passes)

        chosen = f"{cellstore.CODEC['cname']} L{cellstore.CODEC['clevel']} " \
                 f"{'byte' if cellstore.CODEC['shuffle'] == 'shuffle' else 'bit'}-shuffle, " \
                 f"{cellstore.CODEC['blocksize'] // 1024} KiB blocks"
        variants = [(f"store: {chosen} (chosen)", cellstore.CODEC)] + [
            (f"store: {name}", {**cellstore.CODEC, "cname": cname, "clevel": level, "shuffle": shuffle,
                                "blocksize": blocksize})
            for name, cname, level, shuffle, blocksize in ALTERNATIVES]
        for label, codec in variants:
            root = tmp / label.replace(" ", "_").replace(":", "")
            write_s = write_store(root, images, codec)
            store = cellstore.open_cells(root)
            by_cell = {c: i for i, c in enumerate(store.table["cell_id"])}
            rows = np.array([by_cell[f"{i}_{k}"] for i, k, _ in cells])
            sizes = np.array([chunk_file(root / "images" / store.table["image_id"].iat[r] / "tiles",
                                         int(store.table["tile_index"].iat[r])).stat().st_size for r in rows])
            results.append((label, rate(lambda i, s=store, r=rows: s[r[i]], order, args.passes), sizes,
                            write_s))
            if codec is cellstore.CODEC:
                chosen_root, chosen_rows, chosen_store = root, rows, store

        arrays = {i: cellstore.open_tiles(chosen_root, i) for i, _, _ in images}
        results.append(("zarr API, arrays kept open", rate(lambda i: arrays[cells[i][0]][cells[i][1]],
                                                          order, args.passes), results[0][2], None))
        results.append(("zarr API, array opened per read",
                        rate(lambda i: cellstore.open_tiles(chosen_root, cells[i][0])[cells[i][1]],
                             order, args.passes), results[0][2], None))
        sharded = tmp / "sharded"
        write_sharded(sharded, images)
        shards = {i: zarr.open_array(LocalStore(sharded / i, read_only=True), mode="r")
                  for i, _, _ in images}
        shard_sizes = np.array([folder_bytes(sharded / i / "c") / len(t) for i, t, _ in images
                                for _ in range(len(t))])
        results.append(("zarr API, sharded (1 file/image)",
                        rate(lambda i: shards[cells[i][0]][cells[i][1]], order, args.passes),
                        shard_sizes, None))
        for i in order[:20]:  # all layouts hold the same tiles
            assert np.array_equal(chosen_store[chosen_rows[i]], read_png(pngs, *cells[i][:2]))
            assert np.array_equal(shards[cells[i][0]][cells[i][1]], chosen_store[chosen_rows[i]])
        overhead = (folder_bytes(chosen_root) - results[0][2].sum()) / len(cells)

    def kib(sizes: np.ndarray, mask: np.ndarray | None = None) -> str:
        return f"{(sizes if mask is None else sizes[mask]).mean() / 1024:6.0f}"

    print(f"{'layout':52s} {'tiles/s':>8s} {'vs PNG':>7s} {'KiB/tile':>9s} {'real':>6s} "
          f"{'synth':>6s} {'vs PNG':>7s} {'write ms/tile':>14s}")
    for label, reads, sizes, write_s in [("4 x 16-bit PNG (4th place)", png_rate, png_sizes, None),
                                         *results]:
        write = f"{write_s * 1000:14.1f}" if write_s is not None else f"{'':14s}"
        print(f"{label:52s} {reads:8.0f} {reads / png_rate:6.1f}x {kib(sizes):>9s} "
              f"{kib(sizes, sources['real'])} {kib(sizes, sources['synthetic'])} "
              f"{sizes.mean() / png_sizes.mean():6.2f}x {write}")
    print(f"\nstore metadata (zarr.json, rows.csv, image.json, cells.csv, store.json): "
          f"{overhead / 1024:.1f} KiB/tile more")
    print(f"chosen codec: Blosc {cellstore.CODEC}")


if __name__ == "__main__":
    main()
