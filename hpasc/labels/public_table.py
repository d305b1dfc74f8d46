"""The public-HPA table (``kaggle_2021.tsv``, comma- or tab-separated): its one reader, each image's
competition labels from HPA's location names, and each public image's antibody. hpasc-download
selects its rows; the 4th place's class-6 rule (training, hpasc-labels) works per antibody."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hpasc.core.classes import format_labels
from hpasc.core.errors import InputError

REQUIRED_COLUMNS = ("Image", "Label", "Cellline", "in_trainset")
# Public-HPA location names → competition class (the competition's published mapping; several
# finer HPA locations fold into one class). Used when the CSV lacks a Label_idx column.
LOCATION_TO_CLASS: dict[str, int] = {
    "Nucleoplasm": 0, "Nuclear membrane": 1, "Nucleoli": 2, "Nucleoli fibrillar center": 3,
    "Nuclear speckles": 4, "Nuclear bodies": 5, "Endoplasmic reticulum": 6,
    "Golgi apparatus": 7, "Intermediate filaments": 8, "Actin filaments": 9,
    "Focal adhesion sites": 9, "Microtubules": 10, "Mitotic spindle": 11, "Centrosome": 12,
    "Centriolar satellite": 12, "Plasma membrane": 13, "Cell Junctions": 13, "Mitochondria": 14,
    "Aggresome": 15, "Cytosol": 16, "Vesicles": 17, "Peroxisomes": 17, "Endosomes": 17,
    "Lysosomes": 17, "Lipid droplets": 17, "Cytoplasmic bodies": 17, "No staining": 18,
}


def read_public_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read the public-HPA table (comma- or tab-separated); derive ``Label_idx`` when absent."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"public-HPA CSV {path} does not exist")
    try:
        with path.open(encoding="utf-8") as handle:
            sep = "\t" if "\t" in handle.readline() else ","
        table = pd.read_csv(path, sep=sep, dtype={"Label_idx": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    if "Label_idx" not in table.columns:
        table["Label_idx"] = table["Label"].map(map_locations)
    table["Label_idx"] = table["Label_idx"].fillna("").astype(str)
    table["in_trainset"] = table["in_trainset"].map(_as_bool)
    table["ID"] = table["Image"].astype(str).map(lambda url: url.rstrip("/").rsplit("/", 1)[-1])
    return table


def antibody_of_images(path: str | os.PathLike) -> dict[str, str]:
    """Public image id → its antibody (the folder before the image in its URL, e.g.
    ``.../10005/1926_D2_1``), for the images outside the Kaggle train set."""
    table = read_public_csv(path)
    public = table[~table["in_trainset"]]
    antibodies = public["Image"].astype(str).map(lambda url: url.rstrip("/").rsplit("/", 2)[-2])
    return dict(zip(public["ID"], antibodies, strict=True))


def map_locations(names: object) -> str:
    """``"Cytosol,Vesicles"`` → ``"16|17"``; locations outside the competition are dropped."""
    if not isinstance(names, str):
        return ""
    classes = [LOCATION_TO_CLASS[n.strip()] for n in names.split(",") if n.strip() in LOCATION_TO_CLASS]
    return format_labels(list(dict.fromkeys(classes)))


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and np.isnan(value))
