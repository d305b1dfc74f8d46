"""``hpasc-labels inspect|remap|fetch``: tools for cell label folders."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpasc.commands import cli
from hpasc.labels import fourth_place_source as published
from hpasc.labels.summary import inspect_labels
from hpasc.labels.public_table import antibody_of_images
from hpasc.tools.label_remap import MaskFolder, remap_labels


def _inspect_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser("Print what a label folder holds (SPEC {class}.txt files, or the 4th place's "
                              "published folder): per class and source the entries, the distinct cells by "
                              "soft value and, with --dataset, how many ids name the dataset's cells. The "
                              "last line is 'labels: N entries, M classes' (every line and pickled id).")
    parser.add_argument("folder", type=Path, metavar="DIR", help="the label folder")
    parser.add_argument("--dataset", type=Path, default=None, metavar="D",
                        help="a cell dataset (image_cutter.py's output) to resolve the ids against")
    parser.add_argument("--public-table", type=Path, default=None, metavar="CSV",
                        help="the public-HPA table, for the 4th place's class-6 rule per antibody")
    return parser


def _inspect(args: argparse.Namespace) -> int:
    antibody_of = antibody_of_images(args.public_table) if args.public_table else None
    for line in inspect_labels(args.folder, args.dataset, antibody_of):
        print(line)
    return cli.EXIT_OK


def _remap_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser("Carry a label folder's cell ids from the masks they were made on to other masks "
                              "of the same images: each cell becomes the cell it matches at IoU >= 0.6; "
                              "unmatched ids are dropped and counted. The output keeps the input's layout.")
    parser.add_argument("labels", type=Path, metavar="LABELS", help="the label folder (SPEC or the 4th place's)")
    parser.add_argument("--from-masks", type=Path, required=True, metavar="A",
                        help="the cell masks the ids were made on ({ID}.png)")
    parser.add_argument("--to-masks", type=Path, required=True, metavar="B", help="the cell masks to carry them to")
    parser.add_argument("--from-suffix", default="", help="A's masks are {ID}{SUFFIX}.png, e.g. _cellmask")
    parser.add_argument("--to-suffix", default="", help="B's masks are {ID}{SUFFIX}.png")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the new label folder (must not exist)")
    return parser


def _remap(args: argparse.Namespace) -> int:
    counts = remap_labels(args.labels, MaskFolder(args.from_masks, args.from_suffix),
                          MaskFolder(args.to_masks, args.to_suffix), args.out)
    print(f"remap: {counts['moved']} ids moved, {counts['dropped']} dropped (no cell at IoU >= 0.6), "
          f"{counts['without masks']} dropped (image missing from A or B); wrote {args.out}")
    return cli.EXIT_OK


def _fetch_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(f"Download the 4th place's published label folder (relabel/, validation/, "
                              f"auto-relabel*/: {published.PINNED_TOTAL} entries) from "
                              f"{published.REPOSITORY} at commit {published.COMMIT[:7]}, and keep it only if "
                              f"every file holds that commit's number of entries. Their repository has no "
                              f"licence file, so the project does not ship it. Tools and tests find it here or "
                              f"through {published.ENV_VAR}.", flags=("overwrite",))
    parser.add_argument("-o", "--out", type=Path, default=published.default_folder(), metavar="DIR",
                        help="the folder to make (default: in the cache; HPASC_CACHE moves it)")
    parser.add_argument("--base-url", default=published.BASE_URL, metavar="URL",
                        help="where the files are, laid out as their repository (a mirror)")
    return parser


def _fetch(args: argparse.Namespace) -> int:
    folder = published.fetch_fourth_place_labels(args.out, args.base_url, overwrite=args.overwrite,
                                                 progress=not args.no_progress)
    print(f"4th-place labels: {folder} ({published.PINNED_TOTAL} entries of "
          f"{published.REPOSITORY}@{published.COMMIT[:7]}); use it as --relabel {folder}")
    return cli.EXIT_OK


COMMANDS: dict[str, cli.Subcommand] = {"inspect": (_inspect_parser, _inspect, "what a label folder holds"),
                                       "remap": (_remap_parser, _remap, "carry ids to another segmentation"),
                                       "fetch": (_fetch_parser, _fetch, "download the 4th place's labels")}


def main(argv: Sequence[str] | None = None) -> None:
    cli.dispatch("hpasc-labels", "Tools for cell label folders.", COMMANDS, argv)


if __name__ == "__main__":
    main()
