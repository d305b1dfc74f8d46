"""A map of the cells' embeddings: UMAP (umap-learn, seeded) in two dimensions, coloured by each
cell's top class, as DINO4Cells and SubCell show theirs; with image groups (a cell line per image,
say), one more panel per group on the same coordinates. More than :data:`MAX_CELLS` cells are
sampled (seeded) first: UMAP's time and memory grow with the cells."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpasc.core.classes import CLASS_NAMES
from hpasc.core.overlays import CLASS_COLOURS
from hpasc.core.weights_cache import default_cache_dir

log = logging.getLogger(__name__)

MAX_CELLS = 200_000
MIN_CELLS = 10
"""Fewer cells than this make no map (UMAP needs neighbours)."""
SEED = 0


@dataclass(frozen=True)
class CellMap:
    """The map's 2-D points and the table rows they stand for (all, or a sample)."""

    rows: np.ndarray
    points: np.ndarray
    total: int

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.total


def embedding_map(vectors: np.ndarray, max_cells: int = MAX_CELLS, seed: int = SEED) -> CellMap:
    """UMAP of ``vectors`` (cells × features) into 2-D, on a seeded sample of ``max_cells`` rows
    when there are more."""
    cache = os.environ.setdefault("NUMBA_CACHE_DIR", str(default_cache_dir("numba")))  # kept between runs
    log.info("drawing the map of the cells: UMAP compiles its code the first time, about a minute on 2 cores "
             "(cached in %s for later runs)", cache)
    import umap  # numba compiles on first use: only where a map is drawn

    total = len(vectors)
    rows = sample_rows(total, max_cells, seed)
    if len(rows) < total:
        log.info("the map shows a sample of %d of %d cells", len(rows), total)
    reducer = umap.UMAP(n_neighbors=min(15, len(rows) - 1), random_state=seed, n_jobs=1)  # seeded: one thread
    return CellMap(rows, reducer.fit_transform(np.asarray(vectors[rows], np.float32)), total)


def sample_rows(total: int, max_cells: int = MAX_CELLS, seed: int = SEED) -> np.ndarray:
    """The rows a map of ``total`` cells shows, in order: all, or a seeded sample of ``max_cells``."""
    if total <= max_cells:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, max_cells, replace=False))


def map_table(cell_map: CellMap, table: pd.DataFrame, calls: pd.Series) -> pd.DataFrame:
    """The map's points as a table: each shown cell's id, image, top call and coordinates."""
    shown = table.iloc[cell_map.rows]
    return pd.DataFrame({"cell_id": shown["cell_id"].to_numpy(), "image_id": shown["image_id"].to_numpy(),
                         "top1_class": calls.to_numpy()[cell_map.rows],
                         "x": cell_map.points[:, 0], "y": cell_map.points[:, 1]})


OTHERS = (170, 170, 170)
"""The other groups' cells in a group's panel: grey, light on the black background."""


def map_figure(cell_map: CellMap, classes: pd.Series, groups: pd.Series | None = None) -> Figure:
    """The map coloured by ``classes`` (each table row's top class name); with ``groups`` (each
    row's image group), one more panel per group with the others' cells in grey."""
    names = classes.to_numpy()[cell_map.rows]
    panels = [("all cells", np.ones(len(names), bool))]
    if groups is not None:
        kept = groups.to_numpy()[cell_map.rows]
        panels += [(str(group), kept == group) for group in sorted(pd.unique(kept[pd.notna(kept)]), key=str)]
    figure = Figure(figsize=(6.5, 5 * len(panels)))
    colours = {name: np.array(colour) / 255 for name, colour in zip(CLASS_NAMES, CLASS_COLOURS)}
    for index, (title, chosen) in enumerate(panels):
        axis = figure.add_subplot(len(panels), 1, index + 1)
        if not chosen.all():  # light enough to see on black, and named in the legend
            axis.scatter(*cell_map.points[~chosen].T, s=3, color=np.array(OTHERS) / 255, label="other groups")
        for name in [n for n in CLASS_NAMES if (names[chosen] == n).any()]:
            axis.scatter(*cell_map.points[chosen & (names == name)].T, s=3, color=colours[name], label=name)
        axis.set_title(f"{title}: {int(chosen.sum())} cells")
        axis.set_xticks([])
        axis.set_yticks([])
        # Dark, as the prediction pictures: Negative's colour is white.
        axis.set_facecolor("black")
        axis.legend(fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), facecolor="black",
                    labelcolor="white")
    figure.tight_layout()
    return figure
