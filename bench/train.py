"""What feeds training and how fast it trains: loader tiles/s per worker, augmentation tiles/s,
and B0 training images/s at 512 px, on the CPU (the CUDA figures are bench/gpu/'s).

Input: a cell store cut at 512 px by image_cutter.py from the real HPA samples in
tests/data/hpa_samples (their HPA masks), in a temporary folder. Figures:

- loader: ``hpasc.stages.train.data`` TileReader over a random order of the cells with
  ``--workers`` processes, batch 32, uint16 tiles (what a training step receives). Per worker:
  the same with one worker. Workers only decompress; augmentation runs on the training device.
- augmentation: ``augment_batch`` on a batch of 32 at 512 px with ``-p`` (the costliest recipe), on
  the CPU (all cores).
- training: forward + backward + Adam step of EfficientNet-B0 (4 channels, 18 outputs) on random
  batches at 512 px, float32.

Usage: python bench/train.py [--workers 2] [--batches 20] [--cpu-batch 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from hpasc.commands import cli  # noqa: E402
from hpasc.core import runtime  # noqa: E402
from hpasc.cells.tile_spec import TileSpec  # noqa: E402
from hpasc.stages.cut.stage import MaskFolders, cut_folder  # noqa: E402
from hpasc.cellstore import open_cells  # noqa: E402
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.models.registry import create_model  # noqa: E402
from hpasc.stages.train.augment import AugmentSettings, augment_batch  # noqa: E402
from hpasc.stages.train.data import CellSet, EpochBatches, TileReader, fixed_batches  # noqa: E402
from hpasc.stages.train.losses import create_loss  # noqa: E402

REAL = HERE.parent / "tests" / "data" / "hpa_samples"


def real_cells(root: Path) -> CellSet:
    images, masks = REAL / "images", root.parent / "masks"
    masks.mkdir(parents=True)
    labels = {i: [0] for i in scan_images(images).ids}
    for image_id in labels:  # the samples name their masks {ID}_cellmask.png
        (masks / f"{image_id}.png").symlink_to(REAL / "masks" / f"{image_id}_cellmask.png")
    failed = cut_folder(scan_images(images), MaskFolders(masks), labels, root, TileSpec(),
                        runtime.CommonOptions(workers=2, progress=False))
    assert not failed, failed
    store = open_cells(root)
    table = store.table.assign(store=0, row=np.arange(len(store.table)), label_list=[[0]] * len(store))
    return CellSet([store], table)


def loader_rate(cells: CellSet, workers: int, batches: int) -> float:
    """Tiles/s through a TileReader with ``workers`` processes (after their start-up)."""
    order = np.random.default_rng(0).integers(0, len(cells), (batches + 2) * 32)
    sampler = EpochBatches(32, drop_last=True)
    sampler.set_indices(order)
    with TileReader(cells, 512, 32, workers, torch.device("cpu")) as reader:
        loader = iter(reader.batches(sampler))
        next(loader), next(loader)  # workers started and their slots primed
        start = time.perf_counter()
        count = sum(len(indices) for _, indices in loader)
        return count / (time.perf_counter() - start)


def evict(root: Path) -> int:
    """Drop the store's files from the page cache (``posix_fadvise(DONTNEED)`` after a sync), as
    for a store larger than the memory; their bytes."""
    os.sync()
    size = 0
    for path in root.rglob("*"):
        if path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)
            size += path.stat().st_size
    return size


def cold_loader_rate(cells: CellSet, workers: int, passes: int = 10) -> tuple[float, float]:
    """Tiles/s and the workers' core-ms per tile over ``passes`` passes over every cell, each pass
    after the store was evicted from the page cache (every tile read from the disk)."""
    with TileReader(cells, 512, 32, workers, torch.device("cpu")) as reader:
        for started in [reader._pool.submit(int) for _ in range(workers)]:
            started.result()
        count, elapsed, cpu = 0, 0.0, 0.0
        for number in range(passes):
            evict(cells.stores[0].root)
            before = _children_cpu_now(reader)
            start = time.perf_counter()
            order = np.random.default_rng(number).permutation(len(cells))
            count += sum(len(indices) for _, indices in reader.batches(fixed_batches(order, 32)))
            elapsed += time.perf_counter() - start
            cpu += _children_cpu_now(reader) - before
        return count / elapsed, 1000 * cpu / count


def _children_cpu_now(reader: TileReader) -> float:
    """The reader's live workers' CPU seconds so far (from /proc)."""
    total = 0.0
    for pid in reader._pool._processes:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def augment_rate(repeats: int = 3) -> float:
    batch = torch.rand(32, 4, 512, 512)
    settings = AugmentSettings.from_flags(False, True)
    generator = torch.Generator().manual_seed(0)
    augment_batch(batch, settings, generator)
    start = time.perf_counter()
    for _ in range(repeats):
        augment_batch(batch, settings, generator)
    return repeats * 32 / (time.perf_counter() - start)


def train_rate(batch: int, steps: int) -> float:
    model = create_model("efficientnet-b0", 18)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    loss_fn = create_loss("bce")
    x = torch.rand(batch, 4, 512, 512)
    y = torch.rand(batch, 18)

    def step() -> None:
        loss = loss_fn(model(x), y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=cli.positive_int, default=os.cpu_count() or 1,
                        help="loader worker processes for the many-worker figure")
    parser.add_argument("--batches", type=cli.positive_int, default=20, help="timed loader batches")
    parser.add_argument("--cpu-batch", type=cli.positive_int, default=8, help="training batch on the CPU")
    parser.add_argument("--steps", type=cli.positive_int, default=3, help="timed training steps (CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cells = real_cells(Path(tmp) / "dataset")
        print(f"{len(cells)} real cells at 512 px, batch 32")
        one = loader_rate(cells, 1, args.batches)
        many = loader_rate(cells, args.workers, args.batches)
        print(f"loader, 1 worker          {one:8.1f} tiles/s")
        print(f"loader, {args.workers:2d} workers        {many:8.1f} tiles/s "
              f"({many / args.workers:.1f} per worker)")
        store = evict(cells.stores[0].root)
        print(f"store {store / 2**20:.1f} MiB for {len(cells)} tiles: {store / len(cells) / 2**10:.0f} KiB per tile")
        for workers in sorted({1, args.workers}):
            rate, core_ms = cold_loader_rate(cells, workers)
            print(f"loader, {workers:2d} workers, store not in the page cache {rate:8.1f} tiles/s "
                  f"({core_ms:.2f} core-ms per tile)")
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"augment -p, CPU ({torch.get_num_threads()} threads) {augment_rate():8.1f} tiles/s")
    print(f"train B0 512 px, CPU       {train_rate(args.cpu_batch, args.steps):8.2f} images/s "
          f"(batch {args.cpu_batch}, float32)")


if __name__ == "__main__":
    main()
