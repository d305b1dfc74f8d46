"""``hpasc-check-submission``: the command of :mod:`hpasc.submission.check` (its docstring is the help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.submission.check import MAX_PRINTED, check_file
from hpasc.submission.check import __doc__ as library_doc


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc.split("\n\n")[0])
    parser.prog = "hpasc-check-submission"
    parser.add_argument("submission", type=Path, help="the submission.csv to check")
    parser.add_argument("--images", type=Path,
                        help="test image folder: the rows must cover its images at their sizes")
    cli.add_channels_flag(parser)
    parser.add_argument("--sample-submission", type=Path,
                        help="sample submission CSV: the rows must have its IDs in its order")
    return parser


def _run(args: argparse.Namespace) -> int:
    result = check_file(args.submission, args.images, args.channels, args.sample_submission, cli.common_options(args))
    for problem in result.problems[:MAX_PRINTED]:
        print(problem)
    if len(result.problems) > MAX_PRINTED:
        print(f"... and {len(result.problems) - MAX_PRINTED} more problem(s)")
    print(f"{args.submission}: {result.images} image(s), {result.cells} cell(s), "
          f"{len(result.problems)} problem(s)")
    return cli.EXIT_SOME_FAILED if result.problems else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
