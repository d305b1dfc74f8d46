"""Print how long the classical segmentation takes per real 2048² HPA image on one core, and how
well it agrees with HPA's own segmentation there (F1 of cells matched at IoU >= 0.6).

Source: the four real samples in tests/data/hpa_samples (images and HPA's cell masks); with
--synthetic N also the F1 against the truth of N synthetic 1024² images.
Usage: python bench/classical.py [--repeats 3] [--synthetic 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpasc.tools import synthetic  # noqa: E402
from hpasc.commands import cli  # noqa: E402
from hpasc.core import images  # noqa: E402
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.segmentation.classical import segment_classical  # noqa: E402
from hpasc.submission.matching import match_instances  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "hpa_samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=cli.positive_int, default=3, help="timed runs per image")
    parser.add_argument("--synthetic", type=int, default=10, help="synthetic 1024² images scored (0: none)")
    args = parser.parse_args()
    # OpenCV would otherwise spread its filters over every core.
    cv2.setNumThreads(1)
    folder = scan_images(REAL / "images")
    print(f"classical segmentation, 1 thread, best of {args.repeats} runs per image")
    seconds, scores = [], []
    for image_id in folder.ids:
        image = folder.read(image_id)
        mask = images.read_label_image(REAL / "masks" / f"{image_id}_cellmask.png")
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _, cells = segment_classical(image)
            runs.append(time.perf_counter() - start)
        result = match_instances(mask, cells)
        seconds.append(min(runs))
        scores.append(result.f1)
        print(f"{image_id}  {image.shape[1]}x{image.shape[0]}  {min(runs):6.3f} s  F1 {result.f1:.3f}  "
              f"(HPA {result.n_truth} cells, ours {result.n_pred}, matched {result.true_positives})")
    print(f"mean  {np.mean(seconds):6.3f} s/image  F1 {np.mean(scores):.3f}  (min {min(scores):.3f})")
    if args.synthetic > 0:
        synthetic_scores = []
        for seed in range(args.synthetic):
            drawn = synthetic.synthesize_image((1024, 1024), np.random.default_rng(seed))
            synthetic_scores.append(match_instances(drawn.cells, segment_classical(drawn.image)[1]).f1)
        print(f"synthetic 1024² (seeds 0..{args.synthetic - 1}): F1 mean {np.mean(synthetic_scores):.3f} "
              f"min {min(synthetic_scores):.3f}")


if __name__ == "__main__":
    main()
