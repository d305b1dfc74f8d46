"""Agreement between two folders of cell masks: per image, the F1 of cells matched at IoU >= 0.6
(the competition's threshold), and the mean over images. Use it to compare a segmentation with
HPA's masks or with synthetic ground truth; the last line printed is `mean F1: <value>`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpasc.commands import cli
from hpasc.stages.segment.agreement import compare_folders


def _report(args: argparse.Namespace) -> None:
    results = compare_folders(args.truth, args.pred, args.truth_suffix, args.iou)
    shown = sorted(results, key=lambda i: results[i].f1)[:args.worst] if args.worst is not None else list(results)
    if args.worst is not None:
        print(f"the {len(shown)} image(s) of lowest F1 of {len(results)}:")
    for image_id in shown:
        result = results[image_id]
        print(f"{image_id}  F1 {result.f1:.3f}  ({result.true_positives} matched, "
              f"{result.false_negatives} missed, {result.false_positives} extra)")
    print(f"mean F1: {np.mean([r.f1 for r in results.values()]):.4f}")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__)
    parser.prog = "hpasc-agreement"
    parser.add_argument("--truth", type=Path, required=True, help="reference mask folder")
    parser.add_argument("--pred", type=Path, required=True,
                        help="mask folder to judge ({ID}.png, e.g. segmentator.py's -c folder)")
    parser.add_argument("--truth-suffix", default="",
                        help="reference file names are {ID}{SUFFIX}.png (e.g. _cellmask)")
    parser.add_argument("--iou", type=float, default=0.6, help="IoU a match needs")
    parser.add_argument("--worst", type=cli.at_least(0), default=None, metavar="N",
                        help="print only the N images of lowest F1 (default: every image), then the mean")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_report, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
