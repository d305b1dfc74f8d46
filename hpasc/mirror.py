"""Make a public-HPA-style mirror of a Kaggle-layout image folder: 16-bit {ID}_{color}.tif.gz files
and a kaggle_2021.tsv whose Image column holds file:// URL prefixes, so that download_publichpa.py
can run without a network (the demo, tests, an air-gapped copy of HPA data)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hpasc import atomic, cli, runtime
from hpasc.classes import format_labels, read_label_table
from hpasc.download import LOCATION_TO_CLASS
from hpasc.errors import InputError
from hpasc.image_folder import ImageFolder, scan_images
from hpasc.images import CHANNELS, write_channel

# The first public-HPA location name of each class, for the human-readable Label column.
_LOCATION_OF_CLASS = {c: name for name, c in reversed(LOCATION_TO_CLASS.items())}


def make_mirror(folder: ImageFolder, labels_csv: Path, out: Path, options: runtime.CommonOptions) -> Path:
    """Write the mirror of the images of ``folder`` into ``out``; returns the path of its TSV."""
    labels = read_label_table(labels_csv)
    unlabelled = [i for i in folder.ids if i not in labels]
    if unlabelled:
        raise InputError(f"{labels_csv}: no label for {len(unlabelled)} image(s), e.g. {unlabelled[0]}")
    out.mkdir(parents=True, exist_ok=True)
    for image_id in options.bar(folder.ids, unit="image"):
        image = folder.read(image_id)
        for index, channel in enumerate(CHANNELS):
            write_channel(out / f"{image_id}_{channel}.tif.gz", image[..., index])
    table = pd.DataFrame({
        "Image": [f"{out.resolve().as_uri()}/{i}" for i in folder.ids],
        "Label": [",".join(_LOCATION_OF_CLASS[c] for c in labels[i]) for i in folder.ids],
        "Cellline": "synthetic",
        "in_trainset": False,
        "Label_idx": [format_labels(labels[i]) for i in folder.ids],
    })
    tsv = out / "kaggle_2021.tsv"
    atomic.write_text(tsv, table.to_csv(sep="\t", index=False))
    return tsv


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__)
    parser.add_argument("-i", "--images", type=Path, required=True,
                        help="image folder ({ID}_{color}.png, ..., or one {ID}.ome.tif per image)")
    cli.add_channels_flag(parser)
    parser.add_argument("--labels", type=Path, default=None,
                        help="ID,Label CSV of the images (default: train.csv inside --images)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for the .tif.gz files and kaggle_2021.tsv")
    return parser


def _run(args: argparse.Namespace) -> None:
    labels = args.labels or args.images / "train.csv"
    folder = scan_images(args.images, args.channels)
    print(make_mirror(folder, labels, args.output, runtime.CommonOptions.from_args(args)))


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
