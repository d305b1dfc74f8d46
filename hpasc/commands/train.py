"""Train an EfficientNet on a cell dataset (image_cutter.py + data_loader.py) with image-level
labels as soft targets, optionally overridden by manual relabels and pseudo-labels. Each epoch
draws a fresh sample of cells with per-class quotas, augments batches on the training device, and
writes {SAVE}/{NAME}-{EPOCH}.pt (everything inference needs), {NAME}-metrics.csv (losses,
validation mAP and per-class AP over cells) and manifest.json. Runs unchanged under torchrun
(DistributedDataParallel); --resume continues a killed run from its last checkpoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hpasc.commands import cli
from hpasc.commands.train_flags import add_shared_flags, add_train_flags, train_entry


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "device", "overwrite"))
    add_train_flags(parser)
    add_shared_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``train_me.py`` / ``hpasc-train``: parse ``argv`` (default: the command line) and run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Not the same command: --overwrite would start the run again, and without --resume an
    # existing run is refused.
    resume = cli.command_with([sys.argv[0], *argv], add=["--resume"], drop=["--overwrite"])
    cli.run(train_entry, build_parser().parse_args(argv), after_interrupt=f"continue with: {resume}")
