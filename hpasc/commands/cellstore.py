"""``hpasc-cellstore export|merge``: tools for a cell dataset folder (the cell store)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from hpasc.cellstore.export import export_pngs
from hpasc.cellstore.read import open_cells
from hpasc.cellstore.temporary import STALE_AFTER_S
from hpasc.cellstore.write import merge
from hpasc.commands import cli
from hpasc.core.errors import InputError

log = logging.getLogger(__name__)


def _dataset_parser(description: str) -> argparse.ArgumentParser:
    parser = cli.stage_parser(description)
    parser.add_argument("--dataset", type=Path, required=True, metavar="D",
                        help="the cell dataset folder (image_cutter.py's output)")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = _dataset_parser("Write viewable PNGs of chosen cells of a cell dataset: an RGB "
                             "composite per cell (green = protein, red = microtubules, blue = "
                             "nucleus, yellow = ER) and, with --raw, the four 16-bit channels.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--cells", nargs="+", metavar="ID", help="cell ids ({image ID}_{k}) to export")
    which.add_argument("--limit", type=cli.positive_int, metavar="N",
                       help="export the first N cells of the table")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the PNGs ({cell id}.png, {cell id}_{channel}.png)")
    parser.add_argument("--raw", action="store_true",
                        help="also write each channel as a 16-bit greyscale PNG")
    parser.add_argument("--percentile", type=cli.in_range(0.0, 100.0, open_low=True), default=99.5,
                        help="per-channel brightness percentile (of the cell's pixels) shown as "
                             "full intensity in the composite")
    return parser


def _export(args: argparse.Namespace) -> int:
    options = cli.common_options(args)
    store = open_cells(args.dataset)
    if args.cells:
        store.require(args.cells)
        cell_ids = list(args.cells)
    else:
        cell_ids = store.table["cell_id"].iloc[: args.limit].tolist()
    written = export_pngs(store, cell_ids, args.out, raw=args.raw, percentile=args.percentile,
                          progress=lambda ids: options.bar(ids, unit="cell", desc="export"))
    log.info("wrote %d PNG files of %d cells to %s", len(written), len(cell_ids), args.out)
    return cli.EXIT_OK


def _merge_parser() -> argparse.ArgumentParser:
    parser = _dataset_parser("Merge the complete images of a cell dataset into its cells.csv and "
                             "store.json (image_cutter.py does this at the end of every run), and "
                             "remove temporary folders whose writer is gone.")
    parser.add_argument("--stale-after", type=cli.at_least(0.0, float), default=STALE_AFTER_S,
                        metavar="SECONDS",
                        help="remove another machine's temporary folders unchanged for this long")
    return parser


def _merge(args: argparse.Namespace) -> int:
    if not args.dataset.is_dir():
        raise InputError(f"{args.dataset}: no such cell dataset folder")
    table = merge(args.dataset, args.stale_after)
    log.info("%s: %d cells of %d images", args.dataset, len(table), table["image_id"].nunique())
    return cli.EXIT_OK


COMMANDS = {"export": (_export_parser, _export, "write PNGs of chosen cells"),
            "merge": (_merge_parser, _merge, "merge complete images into cells.csv")}


def main(argv: Sequence[str] | None = None) -> None:
    cli.dispatch("hpasc-cellstore", "Tools for a cell dataset folder (the cell store).", COMMANDS, argv)


if __name__ == "__main__":
    main()
