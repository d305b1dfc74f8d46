"""Fine-tune a train_me.py checkpoint with one pass over its split's validation cells: cells
relabelled by hand (--relabel, plus the folders the checkpoint was trained with) are repeated,
every other kept validation cell is seen once, Adam at lr 3e-5. Loss and augmentation default to
the checkpoint's own. Writes {SAVE}/{the checkpoint's file name} and manifest.json."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hpasc.commands import cli
from hpasc.commands.train_flags import add_finetune_flags, add_shared_flags, finetune_entry


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "device", "overwrite"))
    add_finetune_flags(parser)
    add_shared_flags(parser, defaults_from="the checkpoint")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """``finetuner.py`` / ``hpasc-finetune``: parse ``argv`` (default: the command line) and run."""
    cli.run(finetune_entry, build_parser().parse_args(argv))
