"""``hpasc-kaggle``: the command of :mod:`hpasc.tools.kaggle` (its docstring is the help text)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core.errors import InputError
from hpasc.tools.kaggle import (KAGGLE_MISSING, bundle_models, needed_scripts, notebook_code, requirement_pins,
                                write_expectations, write_manifest)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="hpasc-kaggle",
        description="Helpers of scripts/kaggle_bundle.sh and kaggle/submission.ipynb.")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="copy the ensemble's checkpoints into OUT/models and write "
                                           "OUT/ensemble.yaml with paths relative to OUT")
    models.add_argument("-e", "--ensemble", type=Path, required=True, help="the ensemble file (YAML or JSON)")
    models.add_argument("-o", "--out", type=Path, required=True, help="the bundle folder being built")
    models.add_argument("--no-validate", action="store_true",
                        help="only check that the checkpoints exist, do not load them")
    pins = sub.add_parser("pins", help="print NAME==VERSION of the requirements to ship as wheels")
    pins.add_argument("requirements", type=Path, help="the pinned requirements file")
    pins.add_argument("names", nargs="*", default=list(KAGGLE_MISSING),
                      help=f"package names (default: {' '.join(KAGGLE_MISSING)})")
    scripts = sub.add_parser("scripts", help="print the top-level scripts that SCRIPT needs, itself included")
    scripts.add_argument("repo", type=Path, help="the repository root")
    scripts.add_argument("script", help="a script's file name in the repository root, e.g. infer.py")
    expects = sub.add_parser("expects", help="write DIR/EXPECTS.txt (the modules the bundle takes from Kaggle's "
                                             "image, checked by the notebook)")
    expects.add_argument("folder", type=Path, help="the bundle folder")
    manifest = sub.add_parser("manifest", help="write DIR/MANIFEST.txt (sha256, size, path of every file)")
    manifest.add_argument("folder", type=Path, help="the bundle folder")
    code = sub.add_parser("notebook-code", help="print a notebook's code cells as one script")
    code.add_argument("notebook", type=Path, help="an .ipynb file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            for name in bundle_models(args.ensemble, args.out, validate=not args.no_validate):
                print(name)
        elif args.command == "pins":
            print("\n".join(requirement_pins(args.requirements, args.names)))
        elif args.command == "scripts":
            print("\n".join(needed_scripts(args.repo, args.script)))
        elif args.command == "expects":
            write_expectations(args.folder)
        elif args.command == "manifest":
            write_manifest(args.folder)
        else:
            sys.stdout.write(notebook_code(args.notebook))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
