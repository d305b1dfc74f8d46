"""Print how many tiles/s the batch augmentation of hpasc.stages.train.augment handles, per recipe.

Input: random float32 batches (--batch, 4, S, S) with a centred cell-like blob, S = 512 and 128.
Recipes: flips and rotation only ("none"), plus random resize ("-r"), plus resize and pad ("-p").
Runs on the CPU with as many torch threads as cores, and on CUDA when there is a device.
Usage: python bench/augment.py [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpasc.commands import cli  # noqa: E402
from hpasc.stages.train.augment import AugmentSettings, augment_batch  # noqa: E402

RECIPES = {"none": (False, False), "-r": (True, False), "-p": (False, True)}
SIZES = (512, 128)


def make_batch(batch: int, size: int, device: torch.device) -> torch.Tensor:
    axis = torch.linspace(-1, 1, size)
    cell = (axis[:, None] ** 2 + axis[None, :] ** 2 < 0.5).float()
    return (torch.rand(batch, 4, size, size) * cell).to(device)


def tiles_per_second(x: torch.Tensor, settings: AugmentSettings, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    augment_batch(x, settings, generator)  # warm-up: kernels, allocator
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        augment_batch(x, settings, generator)
    if x.is_cuda:
        torch.cuda.synchronize()
    return repeats * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=cli.positive_int, default=32, help="tiles per batch")
    parser.add_argument("--repeats", type=cli.positive_int, default=5, help="timed batches per figure")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
        print(f"{where}, {torch.get_num_threads()} torch threads: augmented tiles/s, "
              f"batch {args.batch}, {args.repeats} batches")
        print("  size  " + "".join(f"{recipe:>10}" for recipe in RECIPES))
        for size in SIZES:
            x = make_batch(args.batch, size, device)
            rates = [tiles_per_second(x, AugmentSettings.from_flags(*flags), args.repeats)
                     for flags in RECIPES.values()]
            print(f"  {size:4d}  " + "".join(f"{rate:10.0f}" for rate in rates))


if __name__ == "__main__":
    main()
