"""Split a cell dataset (image_cutter.py's output, {DATASET}/cells.csv) into train/validation
folds at the image level (all cells of an image in one fold), stratified on the images' 19-class
labels. Writes {DATASET}/split/split.csv (image_id,fold,source; fold -1 = extra image, always
trained on) and {DATASET}/split/split.json (settings and counts per fold and class), where training
reads them. The split is cheap: it is recomputed each run, rewritten only when it changed, and a
split made with other settings is replaced."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.cellstore.split import split_folder
from hpasc.stages.split.stage import SplitSettings, split_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("-i", "--input", type=Path, required=True, metavar="DATASET",
                        help="cell dataset folder holding cells.csv (columns image_id, labels, keep)")
    parser.add_argument("-e", "--extra", type=Path, action="append", default=[],
                        metavar="EXTRA_DATASET",
                        help="cell dataset whose images are only trained on, never validated on, "
                             "e.g. cut public-HPA images (repeatable)")
    parser.add_argument("--folds", type=cli.at_least(2), default=5,
                        help="number of folds (at least 2)")
    parser.add_argument("--fold", type=cli.at_least(0), default=0,
                        help="the fold used for validation, 0..FOLDS-1; the others are trained on")
    parser.add_argument("--seed", type=cli.at_least(0), default=42,
                        help="random seed of the stratification (0..2**32-1); the same seed and "
                             "cells.csv give the same folds")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fold >= args.folds:
        parser.error(f"--fold {args.fold} must be below --folds {args.folds}")
    if args.seed >= 2**32:
        parser.error(f"--seed {args.seed} must be below 2**32")
    return args


def _run(args: argparse.Namespace) -> int:
    settings = SplitSettings(folds=args.folds, fold=args.fold, seed=args.seed)
    outcome = split_dataset(args.input, args.extra, settings)
    if outcome.written:
        runtime.write_manifest(split_folder(args.input), "data_loader", vars(args), {
            "train_images": outcome.stats["train"]["images"],
            "validation_images": outcome.stats["validation"]["images"]})
    runtime.log_done(f"{outcome.stats['train']['images']} training and {outcome.stats['validation']['images']} "
                     f"validation images (fold {args.fold} of {args.folds})", 0, split_folder(args.input))
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """``data_loader.py`` / ``hpasc-split``: parse ``argv`` (default: the command line) and run."""
    cli.run(_run, parse_args(argv))
