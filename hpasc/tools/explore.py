"""An exploratory report of the labels, the cells and the segmentation, as PNGs and one index.html.

``hpasc-explore --labels train.csv --out report/`` writes, from the ``ID,Label`` table:

- ``prevalence.png``: images per class;
- ``cooccurrence.png``: the 19×19 conditional frequency P(column class | row class), i.e. of the
  images labelled with the row's class, the share also labelled with the column's class (the
  diagonal is 1 for every class that occurs); :func:`cooccurrence` gives the underlying counts;
- ``labels_per_image.png``: how many classes an image carries;
- ``summary.csv``: ``class,name,images,share`` (share = images with the class / all images).

With ``--dataset D`` (a cell dataset, :func:`hpasc.cellstore.open_cells`) also
``cells_per_image.png`` and ``examples/class_{c}.png``: a grid of up to ``--examples`` cell
composites from images that the labels table labels with ``c``. The cells are chosen
deterministically: kept cells (``keep``) first, then one cell per image in turn (images by id,
cells by mask id), so that a class's examples come from several images rather than one.

With ``--masks M --images I`` also ``overlays/{ID}.png`` for the first ``--overlays`` images (by id)
that have a mask ``M/{ID}{--mask-suffix}.png``: the mask's cell outlines in white on the colour
composite of the whole image, downscaled to at most 1024 px a side.

``index.html`` links every PNG under a heading per section and shows the summary table. Every file
is written atomically, and ``manifest.json`` records the run.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpasc.cellstore import CellStore, open_cells
from hpasc.core import atomic, runtime
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES, label_matrix, read_label_table
from hpasc.core.errors import InputError
from hpasc.core.image_folder import ImageFolder
from hpasc.core.images import read_label_image, write_png
from hpasc.core.overlays import composite, mask_overlay, save_figure
from hpasc.core.weblinks import href

log = logging.getLogger(__name__)

# Cell tiles are often 64-128 px; enlarging them (nearest neighbour) keeps a grid viewable.
EXAMPLE_SIDE = 128
GAP = 2


@dataclass
class Section:
    """One heading of index.html: its figures as (caption, path relative to the report)."""

    title: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    html: str = ""


def cooccurrence(labels: Iterable[Sequence[int]]) -> np.ndarray:
    """(19, 19) counts: entry (i, j) is the number of images labelled with both i and j, so the
    diagonal is the number of images labelled with i."""
    matrix = label_matrix(labels).astype(np.int64)
    return matrix.T @ matrix


def conditional(counts: np.ndarray) -> np.ndarray:
    """P(column class | row class) from :func:`cooccurrence` counts; 0 for a class never seen."""
    diagonal = np.diag(counts).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(diagonal[:, None] > 0, counts / diagonal[:, None], 0.0)


def summary_table(labels: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """``class, name, images, share``: images labelled with each class and their share of all."""
    if not labels:
        raise InputError("the labels table has no images")
    images = label_matrix(labels.values()).sum(axis=0)
    return pd.DataFrame({"class": np.arange(NUM_CLASSES), "name": CLASS_NAMES, "images": images,
                         "share": np.round(images / len(labels), 6)})


def _class_ticks() -> list[str]:
    return [f"{c} {name}" for c, name in enumerate(CLASS_NAMES)]


def prevalence_figure(images_per_class: np.ndarray) -> Figure:
    figure = Figure(figsize=(8, 6), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(NUM_CLASSES)
    axes.barh(positions, images_per_class, color="tab:blue")
    axes.set_yticks(positions, _class_ticks(), fontsize=8)
    axes.invert_yaxis()  # class 0 at the top, as in the class list
    axes.set_xlabel("images")
    axes.set_title("Label prevalence: images per class")
    for position, value in zip(positions, images_per_class):
        axes.annotate(str(int(value)), (value, position), xytext=(3, 0), textcoords="offset points",
                      va="center", fontsize=7)
    return figure


def cooccurrence_figure(counts: np.ndarray) -> Figure:
    figure = Figure(figsize=(9, 8), layout="constrained")
    axes = figure.add_subplot()
    shown = axes.imshow(conditional(counts), cmap="viridis", vmin=0.0, vmax=1.0)
    ticks = np.arange(NUM_CLASSES)
    axes.set_xticks(ticks, [str(c) for c in ticks], fontsize=8)
    axes.set_yticks(ticks, _class_ticks(), fontsize=8)
    axes.set_xlabel("column class")
    axes.set_title("Label co-occurrence: P(column class | row class)")
    figure.colorbar(shown, ax=axes, shrink=0.8, label="share of the row class's images")
    return figure


def histogram_figure(values: Sequence[int], title: str, xlabel: str) -> Figure:
    """A bar per integer value from 0 to the largest, so that every count has its own bar."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    frequency = np.bincount(np.asarray(values, np.int64), minlength=1)
    axes.bar(np.arange(len(frequency)), frequency, width=0.9, color="tab:blue")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("images")
    axes.set_title(title)
    return figure


def label_report(labels: Mapping[str, Sequence[int]], out: Path) -> Section:
    """Write the label figures and summary.csv into ``out``."""
    summary = summary_table(labels)
    atomic.write_text(out / "summary.csv", summary.to_csv(index=False))
    save_figure(prevalence_figure(summary["images"].to_numpy()), out / "prevalence.png")
    save_figure(cooccurrence_figure(cooccurrence(labels.values())), out / "cooccurrence.png")
    per_image = [len(set(classes)) for classes in labels.values()]
    save_figure(histogram_figure(per_image, f"Labels per image ({len(labels)} images)", "classes"),
                out / "labels_per_image.png")
    return Section("Labels", [("Images per class", "prevalence.png"),
                              ("Co-occurrence, P(column class | row class)", "cooccurrence.png"),
                              ("Labels per image", "labels_per_image.png")],
                   summary.to_html(index=False, float_format="{:.4f}".format, border=0))


def example_rows(table: pd.DataFrame, images: set[str], count: int) -> list[int]:
    """Positions in ``table`` of up to ``count`` cells from ``images``: kept cells first, then
    round-robin over the images (by id), each image's cells by mask id."""
    chosen = table[table["image_id"].isin(images)]
    order = pd.DataFrame({
        "dropped": ~chosen["keep"].astype(bool) if "keep" in chosen else False,
        "image_id": chosen["image_id"],
        "mask_id": chosen["mask_id"],
        "position": np.flatnonzero(table["image_id"].isin(images)),
    })
    order["turn"] = order.groupby(["dropped", "image_id"])["mask_id"].rank(method="first")
    order = order.sort_values(["dropped", "turn", "image_id", "mask_id"], kind="stable")
    return order["position"].head(count).tolist()


def tile_grid(rgbs: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Square RGB tiles in a grid of ``columns``, enlarged to at least EXAMPLE_SIDE, white gaps."""
    side = rgbs[0].shape[0]
    scale = max(1, -(-EXAMPLE_SIDE // side))
    step = side * scale + GAP
    rows = -(-len(rgbs) // columns)
    grid = np.full((rows * step - GAP, min(columns, len(rgbs)) * step - GAP, 3), 255, np.uint8)
    for k, rgb in enumerate(rgbs):
        y, x = divmod(k, columns)
        big = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
        grid[y * step:y * step + big.shape[0], x * step:x * step + big.shape[1]] = big
    return grid


def cell_report(store: CellStore, labels: Mapping[str, Sequence[int]], out: Path, examples: int,
                options: runtime.CommonOptions) -> Section:
    """Write cells_per_image.png and examples/class_{c}.png (classes with no cells get none)."""
    table = store.table
    cells = table.groupby("image_id").size().to_numpy()
    save_figure(histogram_figure(cells, f"Cells per image ({len(cells)} images, {len(table)} cells)",
                                 "cells"), out / "cells_per_image.png")
    section = Section("Cells", [("Cells per image", "cells_per_image.png")])
    unlabelled = set(table["image_id"]) - set(labels)
    if unlabelled:
        log.warning("%d image(s) of the dataset are not in the labels table; their cells are not "
                    "used as examples", len(unlabelled))
    columns = int(np.ceil(np.sqrt(examples)))
    for c in options.bar(range(NUM_CLASSES), desc="examples", unit="class"):
        images = {i for i, classes in labels.items() if c in classes}
        rows = example_rows(table, images, examples)
        if not rows:
            continue
        grid = tile_grid([composite(tile) for tile in store.tiles(rows)], columns)
        name = f"examples/class_{c}.png"
        write_png(out / name, grid)
        section.figures.append((f"{c} {CLASS_NAMES[c]} ({len(rows)} cells)", name))
    return section


def overlay_report(folder: ImageFolder, masks: Path, suffix: str, out: Path, count: int,
                   options: runtime.CommonOptions) -> Section:
    """Write overlays/{ID}.png for the first ``count`` images (by id) that have a mask."""
    if not masks.is_dir():
        raise InputError(f"mask folder {masks} does not exist or is not a folder")
    with_mask = [i for i in folder.ids if (masks / f"{i}{suffix}.png").is_file()]
    if not with_mask:
        log.warning("no image in %s has a mask %s/{ID}%s.png; no overlays", folder.root, masks, suffix)
    section = Section("Segmentation overlays")
    for image_id in options.bar(with_mask[:count], desc="overlays", unit="image"):
        mask_path = masks / f"{image_id}{suffix}.png"
        try:
            rgb = mask_overlay(folder.read(image_id), read_label_image(mask_path))
        except InputError as exc:
            raise InputError(f"{image_id}: {exc}") from None
        name = f"overlays/{image_id}.png"
        write_png(out / name, rgb)
        section.figures.append((image_id, name))
    return section


def render_index(sections: Sequence[Section], title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif} figure{display:inline-block;margin:8px} "
             "img{max-width:900px} td,th{padding:2px 8px;text-align:right}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for caption, path in section.figures:
            link = href(path)
            parts.append(f"<figure><a href=\"{link}\"><img src=\"{link}\" alt=\"{html.escape(caption)}\">"
                         f"</a><figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append(section.html)
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def explore(labels_path: Path, out: Path, dataset: Path | None = None, images: ImageFolder | None = None,
            masks: Path | None = None, mask_suffix: str = "", examples: int = 4, overlays: int = 4,
            options: runtime.CommonOptions | None = None) -> list[Path]:
    """Write the report into ``out``; returns the PNGs written, in index order."""
    options = options or runtime.CommonOptions(progress=False)
    labels = read_label_table(labels_path)
    store = open_cells(dataset) if dataset is not None else None  # a bad dataset fails before writing
    sections = [label_report(labels, out)]
    if store is not None:
        sections.append(cell_report(store, labels, out, examples, options))
    if images is not None and masks is not None:
        sections.append(overlay_report(images, masks, mask_suffix, out, overlays, options))
    atomic.write_text(out / "index.html", render_index(sections, f"HPA exploration: {labels_path.name}"))
    return [out / path for section in sections for _, path in section.figures]
