"""Print how long reading one 2048² 4-channel image takes in each input format (one core).

Source: a real HPA sample from tests/data/hpa_samples (8-bit, scaled to 16-bit), re-written in
each format into a temporary folder.  Usage: python bench/image_io.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.core.images import CHANNELS, write_channel  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "hpa_samples" / "images"


FORMATS = {"png 16-bit": ".png", "png 8-bit": ".png", "tif 16-bit": ".tif",
           "tif.gz 16-bit": ".tif.gz", "jpg tinted": ".jpg"}


def write(folder: Path, image: np.ndarray, fmt: str) -> None:
    for index, channel in enumerate(CHANNELS):
        plane = image[..., index]
        if fmt == "png 8-bit":
            plane = (plane // 257).astype(np.uint8)
        write_channel(folder / f"img_{channel}{FORMATS[fmt]}", plane)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="reads per format")
    args = parser.parse_args()
    source = scan_images(REAL)
    image = source.read(source.ids[0])
    print(f"image {image.shape[1]}x{image.shape[0]}x4, {args.repeats} reads per format, 1 thread")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            folder = Path(tmp) / fmt.replace(" ", "_")
            write(folder, image, fmt)
            size = sum(p.stat().st_size for p in folder.iterdir())
            start = time.perf_counter()
            for _ in range(args.repeats):
                scan_images(folder).read("img")
            seconds = (time.perf_counter() - start) / args.repeats
            print(f"{fmt:14s}  {seconds * 1000:7.1f} ms/image  {size / 2**20:6.1f} MiB on disk")


if __name__ == "__main__":
    main()
