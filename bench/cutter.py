"""Cells/s of image_cutter.py against the 4th place's way of cutting, side by side, 2 workers.

Input: the four real 2048² HPA images of tests/data/hpa_samples with HPA's cell masks, each used
--copies times under new IDs. The 4th place's way, imitated here: read the four channel PNGs,
then per cell and channel crop the box, zero the other cells, pad to a square, resize to 512 with
bilinear interpolation and write one 16-bit PNG (4 files per cell).
Usage: python bench/cutter.py [--copies 4] [--workers 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from hpasc.core import runtime  # noqa: E402
from hpasc.cells.crop import pad_to_square  # noqa: E402
from hpasc.cells.tile_spec import TileSpec  # noqa: E402
from hpasc.stages.cut.stage import MaskFolders, cut_folder  # noqa: E402
from hpasc.cellstore import open_cells  # noqa: E402
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.core.images import CHANNELS, read_label_image  # noqa: E402

REAL = HERE.parent / "tests" / "data" / "hpa_samples"


def make_inputs(root: Path, copies: int) -> tuple[Path, Path, list[str]]:
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    ids = []
    for source in scan_images(REAL / "images").ids:
        for copy in range(copies):
            image_id = f"{source}-{copy}"
            for channel in CHANNELS:
                shutil.copy(REAL / "images" / f"{source}_{channel}.png", images / f"{image_id}_{channel}.png")
            shutil.copy(REAL / "masks" / f"{source}_cellmask.png", masks / f"{image_id}.png")
            ids.append(image_id)
    return images, masks, ids


def fourth_place_image(image_id: str, images: Path, masks: Path, out: Path) -> int:
    """Their way: per cell, the box from the full-image ``argwhere(mask == id)``, then per channel
    a crop with the other cells zeroed, padded, resized bilinearly and written as a 16-bit PNG."""
    cv2.setNumThreads(1)
    planes = {c: cv2.imread(str(images / f"{image_id}_{c}.png"), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 257
              for c in CHANNELS}
    cells = read_label_image(masks / f"{image_id}.png")
    count = int(cells.max())
    for mask_id in range(1, count + 1):
        points = np.argwhere(cells == mask_id)
        (y0, x0), (y1, x1) = points.min(axis=0), points.max(axis=0) + 1
        window = cells[y0:y1, x0:x1]
        for channel, plane in planes.items():
            crop = plane[y0:y1, x0:x1].copy()
            crop[(window != 0) & (window != mask_id)] = 0
            tile = cv2.resize(pad_to_square(crop[..., None])[..., 0], (512, 512))
            cv2.imwrite(str(out / f"{image_id}_{mask_id - 1}_{channel}.png"), tile)
    return count


def time_fourth_place(images: Path, masks: Path, ids: list[str], out: Path,
                      workers: int) -> tuple[float, int]:
    out.mkdir()
    start = time.perf_counter()
    with get_context("spawn").Pool(workers) as pool:
        cells = sum(pool.starmap(fourth_place_image, [(i, images, masks, out) for i in ids]))
    return time.perf_counter() - start, cells


def run_once(root: Path, images: Path, masks: Path, ids: list[str], workers: int) -> tuple[float, float, int, int]:
    """(our cells/s, theirs, our bytes, theirs) of one side-by-side run, ours first."""
    for old in ("dataset", "png"):
        shutil.rmtree(root / old, ignore_errors=True)
    options = runtime.CommonOptions(workers=workers, progress=False)
    start = time.perf_counter()
    failed = cut_folder(scan_images(images), MaskFolders(masks), {i: [0] for i in ids}, root / "dataset",
                        TileSpec(), options)
    ours = time.perf_counter() - start
    assert not failed, failed
    ours_cells = len(open_cells(root / "dataset"))
    theirs, their_cells = time_fourth_place(images, masks, ids, root / "png", workers)
    store_bytes = sum(p.stat().st_size for p in (root / "dataset").rglob("*") if p.is_file())
    png_bytes = sum(p.stat().st_size for p in (root / "png").iterdir())
    return ours_cells / ours, their_cells / theirs, store_bytes // ours_cells, png_bytes // their_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4, help="copies of each real image")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both")
    parser.add_argument("--runs", type=int, default=3, help="side-by-side runs (min/median/max reported)")
    args = parser.parse_args()
    print(f"{len(scan_images(REAL / 'images').ids) * args.copies} images of 2048², {args.workers} workers, "
          f"512 px tiles, {args.runs} runs")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, masks, ids = make_inputs(root, args.copies)
        for run in range(args.runs):
            ours, theirs, our_bytes, their_bytes = run_once(root, images, masks, ids, args.workers)
            ratios.append(ours / theirs)
            print(f"run {run + 1}: image_cutter.py {ours:6.1f} cells/s ({our_bytes / 1024:.0f} KiB/cell), "
                  f"4th place's way {theirs:6.1f} cells/s ({their_bytes / 1024:.0f} KiB/cell): "
                  f"{ratios[-1]:.2f}x", flush=True)
    print(f"speed-up min / median / max: {min(ratios):.2f}x / {float(np.median(ratios)):.2f}x / {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
