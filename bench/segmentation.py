"""All segmentation figures for 2048² images in one run:

1. the classical backend: s/image on one core and its F1 against HPA's masks (bench/classical.py);
2. label_cell: ours, and HPA's side by side when its code is importable (bench/label_cell.py);
3. the DPN-UNet networks on the CPU: ms/image at batch 1, float32 (slow). Their speed does not
   depend on their weights, so random weights are used. The CUDA figures (batch sizes, autocast
   dtypes, channels-last) are bench/gpu/'s.
The HPA backend's CPU work per image, stage by stage (read, scaling, restoring, label_cell, cut,
RLE), is bench/infer.py's table.
Usage: python bench/segmentation.py [--hpa-path DIR] [--skip-components]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.models.precision import Precision  # noqa: E402
from hpasc.segmentation.classical import segment_classical  # noqa: E402
from hpasc.segmentation.network import DPNUNet  # noqa: E402
from hpasc.segmentation.predict import HpaNetworks  # noqa: E402
from hpasc.segmentation.scaling import prepare  # noqa: E402
from tests.stand_in_maps import predictions_from_masks  # noqa: E402

REAL = HERE.parent / "tests" / "data" / "hpa_samples" / "images"


def component(script: str, *args: str) -> None:
    print(f"\n## {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)


def stand_in_output(image: np.ndarray, network_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Network-like softmax outputs (3×h×w) for an image: made from its classical segmentation,
    so that label_cell has a realistic amount of work (random maps would be a pathological case)."""
    nuclei, cells = segment_classical(image)
    maps = predictions_from_masks(cells, nuclei, np.random.default_rng(0))
    height, width = network_shape
    return tuple(cv2.resize(m, (width, height), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                 .astype(np.float32) / 255 for m in maps)


def network_speed() -> None:
    print("\n## DPN-UNet nuclei + cell networks on the CPU, 512² inputs (a 2048² image at scale 0.25)")
    prepared = prepare(scan_images(REAL).read(scan_images(REAL).ids[0]))
    networks = HpaNetworks(DPNUNet(), DPNUNet(), "cpu", Precision("float32", channels_last=False))
    networks([prepared])  # warm-up: allocation
    start = time.perf_counter()
    networks([prepared])
    print(f"float32 batch 1  {(time.perf_counter() - start) * 1000:8.1f} ms/image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hpa-path", default=None, help="folder holding HPA's hpacellseg package")
    parser.add_argument("--skip-components", action="store_true",
                        help="only the network timings")
    args = parser.parse_args()
    if not args.skip_components:
        component("classical.py", "--synthetic", "0")
        component("label_cell.py", *(["--hpa-path", args.hpa_path] if args.hpa_path else []))
    network_speed()


if __name__ == "__main__":
    main()
