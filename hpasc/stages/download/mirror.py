"""A public-HPA-style mirror of a Kaggle-layout image folder: 16-bit {ID}_{color}.tif.gz files
and a kaggle_2021.tsv whose Image column holds file:// URL prefixes, so that download_publichpa.py
can run without a network (the demo, tests, an air-gapped copy of HPA data)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from hpasc.core import atomic, runtime
from hpasc.core.classes import format_labels, read_label_table
from hpasc.core.errors import InputError
from hpasc.core.image_folder import ImageFolder, ImageSource
from hpasc.core.images import CHANNELS, write_channel
from hpasc.labels.public_table import LOCATION_TO_CLASS

log = logging.getLogger(__name__)

# The first public-HPA location name of each class, for the human-readable Label column.
_LOCATION_OF_CLASS = {c: name for name, c in reversed(LOCATION_TO_CLASS.items())}


def make_mirror(folder: ImageFolder, labels_csv: Path, out: Path, options: runtime.CommonOptions) -> Path:
    """Write the mirror of the images of ``folder`` into ``out``; returns the path of its TSV."""
    labels = read_label_table(labels_csv)
    unlabelled = [i for i in folder.ids if i not in labels]
    if unlabelled:
        raise InputError(f"{labels_csv}: no label for {len(unlabelled)} image(s), e.g. {unlabelled[0]}")
    out.mkdir(parents=True, exist_ok=True)
    todo = [i for i in folder.ids if options.overwrite or not _mirrored(folder.source(i), out)]
    if len(todo) < len(folder.ids):
        log.info("%d image(s) mirrored before, kept (--overwrite writes them again)", len(folder.ids) - len(todo))
    for image_id in options.bar(todo, unit="image"):
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


def _mirrored(source: ImageSource, out: Path) -> bool:
    """Whether the mirror's four files of an image exist and are newer than every file of its
    source (each is written whole, under a temporary name first)."""
    made = [out / f"{source.image_id}_{channel}.tif.gz" for channel in CHANNELS]
    if not all(path.is_file() for path in made):
        return False
    return min(p.stat().st_mtime_ns for p in made) >= max(p.stat().st_mtime_ns for p in source.files)
