"""A run's summary for a person: ``hpasc-report --cells cells.h5ad [-o report/]``
reads infer.py's per-cell table (.h5ad, .parquet or .csv) and writes an HTML page with plots:
cells per image, the share of cells confidently called for each class, the images of lowest
quality (the most cells cut by the border or flagged as outliers: segmentation or staining to
check first), plus ``images.csv`` with those numbers per image, and, when the table has the
cells' embeddings (infer.py --embeddings), a UMAP map of them coloured by each cell's top class
(one more panel per image group with ``--groups``)."""

from __future__ import annotations

import html
import logging
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpasc.cells.thresholds import CLEAN
from hpasc.core import atomic
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES
from hpasc.core.overlays import save_figure
from hpasc.core.weblinks import href
from hpasc.core.errors import InputError
from hpasc.stages.infer.cell_table import CONFIDENCES, read_cell_table, read_embeddings, top_calls
from hpasc.tools.cell_map import MIN_CELLS, embedding_map, map_figure, map_table

log = logging.getLogger(__name__)


def image_quality(table: pd.DataFrame) -> pd.DataFrame:
    """Per image: cells, cells cut by the border, outliers, and their share; worst first."""
    flagged = table.assign(cut=table["border"] < CLEAN, outlier_cell=table["outlier"] < CLEAN)
    per_image = flagged.groupby("image_id", sort=True).agg(
        cells=("cell_id", "size"), cut=("cut", "sum"), outliers=("outlier_cell", "sum"))
    per_image["flagged_share"] = ((per_image["cut"] + per_image["outliers"]) / per_image["cells"]).round(3)
    return per_image.sort_values(["flagged_share", "cells"], ascending=[False, False], kind="stable").reset_index()


def prevalence(table: pd.DataFrame, threshold: float) -> np.ndarray:
    """The share of cells whose confidence of each class is at least ``threshold``."""
    if table.empty:
        return np.zeros(NUM_CLASSES)
    return (table[list(CONFIDENCES)].to_numpy() >= threshold).mean(axis=0)


def _bar_figure(values: np.ndarray, threshold: float) -> Figure:
    figure = Figure(figsize=(10, 4.5))
    axis = figure.subplots()
    axis.bar(range(NUM_CLASSES), values * 100, color="tab:blue")
    axis.set_xticks(range(NUM_CLASSES), [f"{k} {n}"[:24] for k, n in enumerate(CLASS_NAMES)], rotation=60,
                    ha="right", fontsize=8)
    axis.set_ylabel(f"% of cells with confidence ≥ {threshold}")
    figure.tight_layout()
    return figure


def _cells_figure(cells: pd.Series) -> Figure:
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.hist(cells, bins=min(30, max(1, int(cells.to_numpy().max(initial=1)))), color="tab:green")
    axis.set_xlabel("cells per image")
    axis.set_ylabel("images")
    figure.tight_layout()
    return figure


def write_report(table_path: Path, out: Path, threshold: float, worst: int, groups: Path | None = None) -> Path:
    table = read_cell_table(table_path)
    cell_map = _map_section(table, read_embeddings(table_path), out, None if groups is None else
                            table["image_id"].map(read_groups(groups, set(table["image_id"]))))
    quality = image_quality(table)
    shares = prevalence(table, threshold)
    save_figure(_bar_figure(shares, threshold), out / "prevalence.png")
    save_figure(_cells_figure(quality["cells"]), out / "cells_per_image.png")
    atomic.write_text(out / "images.csv", quality.to_csv(index=False, lineterminator="\n"))
    rows = "".join(f"<tr><td>{html.escape(str(r.image_id))}</td><td>{r.cells}</td><td>{r.cut}</td>"
                   f"<td>{r.outliers}</td><td>{r.flagged_share:.1%}</td></tr>"
                   for r in quality.head(worst).itertuples())
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>hpasc report</title>"
            "<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:right} "
            "img{max-width:1000px}</style></head><body>"
            f"<h1>{html.escape(table_path.name)}</h1><p>{table['image_id'].nunique()} images, {len(table)} cells, "
            f"{int((table[list(CONFIDENCES)].to_numpy() >= threshold).sum())} confident calls "
            f"(confidence ≥ {threshold}).</p>"
            f"<h2>Confident calls per class</h2><img src=\"{href('prevalence.png')}\" alt=\"prevalence\">"
            f"<h2>Cells per image</h2><img src=\"{href('cells_per_image.png')}\" alt=\"cells per image\">"
            f"<h2>Lowest-quality images</h2><p>Cells cut by the border or flagged as outliers "
            f"(<a href=\"{href('images.csv')}\">images.csv</a> lists every image).</p>"
            "<table><tr><th>image</th><th>cells</th><th>cut by the border</th><th>outliers</th><th>flagged</th></tr>"
            f"{rows}</table>{cell_map}</body></html>\n")
    atomic.write_text(out / "index.html", page)
    return out / "index.html"


def read_groups(path: Path, images: Collection[str]) -> dict[str, str]:
    """Image ID → its group, from a CSV with columns ``ID`` and ``group``. An image given two groups
    is refused (InputError: how many, and the first); ids that are not ``images`` are one warning."""
    try:
        groups = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if not {"ID", "group"} <= set(groups.columns):
        raise InputError(f"{path}: needs the columns ID and group")
    pairs = groups[["ID", "group"]].drop_duplicates()
    twice = pairs[pairs["ID"].duplicated(keep=False)]
    if len(twice):
        first = twice["ID"].iloc[0]
        raise InputError(f"{path}: {twice['ID'].nunique()} image(s) have two groups or more (the first: {first}: "
                         f"{', '.join(twice.loc[twice['ID'] == first, 'group'])})")
    unknown = sorted(set(pairs["ID"]) - set(images))
    if unknown:
        log.warning("%s: %d of its %d ids are not images of the table (the first: %s); they are left out",
                    path, len(unknown), len(pairs), unknown[0])
    return dict(zip(pairs["ID"], pairs["group"]))


def _map_section(table: pd.DataFrame, vectors: np.ndarray | None, out: Path, groups: pd.Series | None) -> str:
    """The page's map of the embeddings (map.png), or a line saying why there is none."""
    if vectors is None:
        return "<h2>Map of the cells</h2><p>No map: the table has no embeddings (hpasc-infer --embeddings).</p>"
    if len(vectors) < MIN_CELLS:
        return f"<h2>Map of the cells</h2><p>No map: {len(vectors)} cells, fewer than {MIN_CELLS}.</p>"
    cell_map = embedding_map(vectors)
    calls = top_calls(table[list(CONFIDENCES)].to_numpy())["top1_class"]  # tables made before the calls too
    save_figure(map_figure(cell_map, calls, groups), out / "map.png")
    atomic.write_text(out / "map.csv", map_table(cell_map, table, calls).to_csv(index=False, lineterminator="\n"))
    sample = (f" It shows a random sample of {len(cell_map.rows)} of the {cell_map.total} cells."
              if cell_map.sampled else "")
    return ("<h2>Map of the cells</h2><p>UMAP of the cells' embeddings (the mean over the ensemble's members), "
            f"each cell coloured by its top class.{sample} <a href=\"{href('map.csv')}\">map.csv</a> holds each "
            f"cell's point.</p><img src=\"{href('map.png')}\" alt=\"map of the cells\">")
