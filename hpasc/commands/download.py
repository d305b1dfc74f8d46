"""Download public-HPA images as 16-bit Kaggle-layout PNGs ({OUT}/{ID}_{color}.png), plus
{OUT}/labels.csv (ID,Label as train.csv) and {OUT}/failures.csv (images that could not be fetched).
Images whose four PNGs already exist are skipped, so an interrupted run can simply be re-run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.core.classes import NUM_CLASSES
from hpasc.core.http import HttpPolicy
from hpasc.stages.download.stage import Selection, download_public_hpa


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "overwrite", "shard"))
    parser.set_defaults(workers=8)
    parser.add_argument("-i", "--input", type=Path, default=Path("data/kaggle_2021.tsv"),
                        help="public-HPA CSV/TSV with columns Image, Label, Cellline, in_trainset "
                             "and optionally Label_idx (derived from Label when absent)")
    parser.add_argument("-o", "--output", type=Path, default=Path("publichpa"),
                        help="folder for the PNGs and the labels/failures CSVs")
    parser.add_argument("--cellline", action="append", default=[], metavar="NAME",
                        help="keep only this cell line (repeatable)")
    parser.add_argument("--label", action="append", type=int, default=[], metavar="CLASS",
                        choices=range(NUM_CLASSES),
                        help="keep only images carrying this class index 0-18 (repeatable)")
    parser.add_argument("--include-trainset", action="store_true",
                        help="also download images that are in the Kaggle train set")
    parser.add_argument("--limit", type=cli.positive_int, default=None,
                        help="download at most this many selected images (in CSV order)")
    parser.add_argument("--timeout", type=cli.at_least(0.001, float), default=HttpPolicy.timeout,
                        help="seconds to wait for a server response")
    parser.add_argument("--retries", type=cli.at_least(0), default=HttpPolicy.retries,
                        help="further tries after a transient failure")
    parser.add_argument("--backoff", type=cli.at_least(0.0, float), default=HttpPolicy.backoff,
                        help="seconds before the first retry, doubled for each later one")
    return parser


def _run(args: argparse.Namespace) -> int:
    selection = Selection(include_trainset=args.include_trainset, celllines=tuple(args.cellline),
                          labels=tuple(args.label), limit=args.limit)
    policy = HttpPolicy(timeout=args.timeout, retries=args.retries, backoff=args.backoff)
    failed = download_public_hpa(args.input, args.output, selection, policy,
                                 cli.common_options(args))
    runtime.write_manifest(args.output, "download_publichpa", vars(args), {"failed": len(failed)})
    return cli.EXIT_SOME_FAILED if failed else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """``download_publichpa.py`` / ``hpasc-download``: parse ``argv`` (default: the command line) and run."""
    cli.run(_run, build_parser().parse_args(argv))
