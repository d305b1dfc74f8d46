"""``hpasc-gradcam``: the command of :mod:`hpasc.tools.gradcam` (its docstring is the help text)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.core.classes import NUM_CLASSES
from hpasc.tools.gradcam import GradcamRun, explain_cells
from hpasc.tools.gradcam import __doc__ as library_doc


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(library_doc.split("\n\n")[0], flags=("device",))
    parser.prog = "hpasc-gradcam"
    cli.add_model_and_dataset(parser, split=False)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--cells", nargs="+", metavar="ID", help="cell ids ({image ID}_{k}) to explain")
    which.add_argument("--limit", type=cli.positive_int, metavar="N", help="explain the first N kept cells")
    parser.add_argument("--classes", nargs="+", type=int, choices=range(NUM_CLASSES), metavar="K",
                        help="classes to explain for every cell (default: the cell's image-level labels, "
                             "else its top-scoring class)")
    parser.add_argument("--layer", default=None,
                        help="the layer Grad-CAM looks at, by its name in the architecture's registry "
                             "entry: conv_head (default), last_block or bn1 for the EfficientNets, "
                             "last_stage for timm models")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for {cell id}_c{class}.png, index.html and the manifest")
    cli.add_precision_flag(parser, "scoring the cells (the heatmaps' gradients are float32 always)")
    return parser


def _run(args: argparse.Namespace) -> int:
    run = GradcamRun(args.checkpoint, args.dataset, args.out, tuple(args.cells or ()), args.limit,
                     tuple(args.classes) if args.classes else None, args.layer, cli.precision_from_args(args))
    heatmaps = explain_cells(run, cli.common_options(args))
    runtime.write_manifest(args.out, "gradcam", vars(args), {"heatmaps": len(heatmaps)})
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
