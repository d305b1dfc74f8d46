"""Predict every cell of a folder of test images with an ensemble of checkpoints and write a
Kaggle submission.csv: segmentation (HPA's networks or the classical backend) → cell tiles with
image_cutter.py's own cropping and border/outlier factors → the ensemble's class scores (Negative =
1 - max when the models have 18 outputs) → the 4th place's cell/image weighting and factors → one
row per image with every cell × 19 classes and its RLE mask, in the sample submission's order. The
result is checked (hpasc-check-submission) before it is kept."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.commands.segment_flags import add_segmentation_flags, segmentation_settings
from hpasc.core.errors import InputError
from hpasc.core.image_folder import scan_images
from hpasc.stages.infer.cell_table import check_table_path
from hpasc.stages.infer.settings import SEGMENTATION_BATCH, InferSettings
from hpasc.submission.check import check_submission
from hpasc.submission.rows import read_sample_submission, read_submission

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__, flags=("workers", "device", "overwrite"))
    cli.add_image_input(parser, "test image folder", "TEST_DIR")
    parser.add_argument("-e", "--ensemble", type=Path, required=True,
                        help="ensemble file (YAML/JSON: groups of checkpoints with weights, "
                             "post-processing settings) or a single checkpoint .pt")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="the submission CSV to write (default: submission.csv, or none when only "
                             "--cells-out is given)")
    parser.add_argument("--cells-out", type=Path, default=None, metavar="TABLE",
                        help="also write a per-cell table (.parquet or .csv): box, area, centroid, factors, "
                             "raw probabilities, confidences and top class of every cell")
    parser.add_argument("--overlays", type=Path, default=None, metavar="DIR",
                        help="also write DIR/{ID}.png (the image with each cell filled in the colour of its top "
                             "class), a histogram of the confidences and DIR/index.html")
    parser.add_argument("--overlay-threshold", type=cli.at_least(0.0, float), default=InferSettings.overlay_threshold,
                        help="cells whose top confidence is below this are grey in the pictures")
    parser.add_argument("--embeddings", action="store_true",
                        help="with --cells-out: each member's pooled feature vectors, float16, in "
                             "{TABLE stem}.embeddings-{j}.npy (row i = the table's row i)")
    parser.add_argument("--sample-submission", type=Path, default=None, metavar="CSV",
                        help="the competition's sample_submission.csv: its IDs and their order")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=InferSettings.batch_size,
                        help="cell tiles per network batch")
    parser.add_argument("--segmentation-batch", type=cli.positive_int, default=SEGMENTATION_BATCH,
                        help="images per segmentation network batch (hpa backend)")
    parser.add_argument("--tta", action="store_true",
                        help="average each model over the tile and its horizontal and vertical flips")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="write the ensemble's raw scores (no cell/image weighting, no factors)")
    parser.add_argument("--save-masks", type=Path, default=None, metavar="DIR",
                        help="also write each image's cell label image to DIR/{ID}.png")
    parser.add_argument("--allow-other-segmentation", action="store_true",
                        help="predict even when this run's segmentation (backend, HPA's weights) is not the one "
                             "the checkpoints' training cells were cut from (a warning instead of a refusal)")
    cli.add_precision_flag(parser, compiles=True)
    add_segmentation_flags(parser)
    return parser


def _outputs(args: argparse.Namespace, overwrite: bool) -> Path | None:
    """The submission to write (None: only the cell table); refuses to replace files silently."""
    if args.embeddings and args.cells_out is None:
        raise InputError("--embeddings needs --cells-out TABLE")
    if args.cells_out is not None:
        check_table_path(args.cells_out)
    output = args.output if args.output is not None or args.cells_out is not None else Path("submission.csv")
    for path in filter(None, (output, args.cells_out)):
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists: pass --overwrite to replace it, or choose another name")
        _check_place(path)
    return output


def _check_place(path: Path) -> None:
    """A file where the output's folder must be is refused now, not after the whole run."""
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"{folder} is not a folder: {path} cannot be written")
            return


def _run(args: argparse.Namespace) -> int:
    # Imported here: torch takes seconds to import, which --help and a refused flag need not wait for.
    from hpasc.stages.infer.stage import infer_folder

    settings = InferSettings(segmentation=segmentation_settings(args, args.segmentation_batch),
                             batch_size=args.batch_size, tta=args.tta, weighting=not args.no_postprocessing,
                             save_masks=args.save_masks, precision=cli.precision_from_args(args),
                             cells_out=args.cells_out, embeddings=args.embeddings, overlays=args.overlays,
                             overlay_threshold=args.overlay_threshold,
                             allow_other_segmentation=args.allow_other_segmentation)
    options = cli.common_options(args)
    output = _outputs(args, options.overwrite)
    sample = None if args.sample_submission is None else read_sample_submission(args.sample_submission)
    failures = infer_folder(scan_images(args.input, args.channels), args.ensemble, output, sample, settings, options)
    problems = [] if output is None else check_submission(read_submission(output), None, sample and sample.order)
    for problem in problems:
        log.error("submission check: %s", problem)
    return cli.EXIT_SOME_FAILED if failures or problems else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """``infer.py`` / ``hpasc-infer``: parse ``argv`` (default: the command line) and run."""
    cli.run(_run, build_parser().parse_args(argv))
