"""One image's cells cut the way a :class:`~hpasc.cells.tile_spec.TileSpec` says: each cell's tile and
its row (box, area, border and outlier factors, whether training keeps it). hpasc-cut stores them;
infer.py's workers score them; both call :func:`cut_image`, so a model meets at inference exactly
the cells it was trained on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from hpasc.cells.crop import cell_areas, crop_cells
from hpasc.cells.factors import border_factors, keep_for_training, outlier_factors
from hpasc.cells.tile_spec import TileSpec
from hpasc.core.classes import format_labels
from hpasc.core.images import Region


def cut_image(image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray | None, image_id: str,
              labels: list[int], spec: TileSpec,
              regions: Sequence[Region | None] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """An image's tiles (N×4×S×S) and table rows, cut and judged by ``spec`` (its heuristics'
    numbers included); without nucleus masks the border factor is computed from the cell masks. ``regions``: ``ndi.find_objects(cells)``, when the caller has it."""
    if regions is None:  # one pass over the cells for the tiles and the factors
        regions = ndi.find_objects(cells)
    ids, boxes, tiles = crop_cells(image, cells, spec, regions)
    border = border_factors(cells, image[..., 2], ids, spec.thresholds, regions) if nuclei is None else \
        border_factors(nuclei, image[..., 2], ids, spec.thresholds)
    outlier = outlier_factors(cells, image, ids, border, spec.thresholds, regions)
    rows = pd.DataFrame({
        "cell_id": [f"{image_id}_{mask_id - 1}" for mask_id in ids],
        "image_id": image_id,
        "mask_id": ids,
        "y0": [boxes[i].y0 for i in ids], "x0": [boxes[i].x0 for i in ids],
        "y1": [boxes[i].y1 for i in ids], "x1": [boxes[i].x1 for i in ids],
        "area": cell_areas(cells, boxes, ids),
        "border": border,
        "outlier": outlier,
        "keep": keep_for_training(border, outlier, labels),
        "labels": format_labels(labels),
    })
    return tiles, rows
