"""Print how long one synthetic image takes at 1024² and 2048² on one core: drawing it
(hpasc.tools.synthetic.synthesize_image) and drawing plus writing its four channels and two masks.

Usage: python bench/synthetic.py [--images 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpasc.tools import synthetic  # noqa: E402
from hpasc.commands import cli  # noqa: E402
from hpasc.core import runtime  # noqa: E402

SIZES = (1024, 2048)


def seconds_per_image(size: int, count: int) -> tuple[float, float]:
    """Mean seconds to draw one image, and to draw and write one (a 1-image dataset)."""
    start = time.perf_counter()
    for index in range(count):
        synthetic.synthesize_image((size, size), np.random.default_rng([0, index]))
    draw = (time.perf_counter() - start) / count
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synthetic.generate_dataset(Path(tmp), count, (size, size), 0, runtime.CommonOptions(progress=False))
        total = (time.perf_counter() - start) / count
    return draw, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=cli.positive_int, default=5, help="images averaged per size")
    args = parser.parse_args()
    # OpenCV would otherwise spread its filters over every core.
    cv2.setNumThreads(1)
    synthetic.synthesize_image((256, 256), np.random.default_rng(0))
    print(f"mean of {args.images} images per size, 1 thread")
    for size in SIZES:
        draw, total = seconds_per_image(size, args.images)
        print(f"{size}x{size}  {draw:6.3f} s/image drawn  {total:6.3f} s/image drawn and written")


if __name__ == "__main__":
    main()
