"""Agreement between two folders of cell masks: per image, the F1 of cells matched at IoU >= 0.6
(the competition's threshold), and the mean over images. Use it to compare a segmentation with
HPA's masks or with synthetic ground truth; the last line printed is `mean F1: <value>`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpasc import cli
from hpasc.errors import InputError
from hpasc.images import read_label_image
from hpasc.submission.matching import MatchResult, match_instances


def compare_folders(truth: Path, pred: Path, truth_suffix: str = "",
                    iou_threshold: float = 0.6) -> dict[str, MatchResult]:
    """Match ``{truth}/{ID}{truth_suffix}.png`` with ``{pred}/{ID}.png`` for every ID in ``pred``."""
    if not pred.is_dir():
        raise InputError(f"mask folder {pred} does not exist")
    results = {}
    for path in sorted(pred.glob("*.png")):
        reference = truth / f"{path.stem}{truth_suffix}.png"
        if not reference.is_file():
            raise InputError(f"{path.stem}: no reference mask {reference}")
        results[path.stem] = match_instances(read_label_image(reference), read_label_image(path),
                                             iou_threshold)
    if not results:
        raise InputError(f"no masks (*.png) in {pred}")
    return results


def _report(args: argparse.Namespace) -> None:
    results = compare_folders(args.truth, args.pred, args.truth_suffix, args.iou)
    for image_id, result in results.items():
        print(f"{image_id}  F1 {result.f1:.3f}  ({result.true_positives} matched, "
              f"{result.false_negatives} missed, {result.false_positives} extra)")
    print(f"mean F1: {np.mean([r.f1 for r in results.values()]):.4f}")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__)
    parser.prog = "python -m hpasc.segmentation.agreement"
    parser.add_argument("--truth", type=Path, required=True, help="reference mask folder")
    parser.add_argument("--pred", type=Path, required=True,
                        help="mask folder to judge ({ID}.png, e.g. segmentator.py's -c folder)")
    parser.add_argument("--truth-suffix", default="",
                        help="reference file names are {ID}{SUFFIX}.png (e.g. _cellmask)")
    parser.add_argument("--iou", type=float, default=0.6, help="IoU a match needs")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_report, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
