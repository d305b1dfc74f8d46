"""What infer.py's pool runs in its worker processes: an image's cells, cut for the ensemble.

Nothing here imports torch, nor may anything it imports: a spawned worker imports this module
to run a job, and torch would cost each worker 3 s to start and 500 MB of memory for networks
that only the main process runs (tests/test_workers.py checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from hpasc.cells.crop import Box, cell_centroids, crop_cells
from hpasc.cells.tile_spec import TileSpec
from hpasc.core.images import write_label_image
from hpasc.core.overlays import composite, shrink
from hpasc.core.shared_arrays import SharedArrays, Slot
from hpasc.cells.cut import cut_image
from hpasc.submission.rle import encode_cells


@dataclass(frozen=True)
class CellCutter:
    """What a worker makes of an image's masks (a :class:`~hpasc.segmentation.jobs.MaskConsumer`): tiles
    per tile spec, the mask file, the shrunk image and mask for a picture."""

    tile_specs: tuple[TileSpec, ...]
    save_masks: Path | None = None
    preview: bool = False

    def __call__(self, image_id: str, image: Callable[[], np.ndarray], nuclei: np.ndarray, cells: np.ndarray,
                 slot: Slot | None) -> ImageCells:
        return cells_of_image(image_id, image(), cells, nuclei, self).shared(slot)


@dataclass
class ImageCells:
    """What a worker hands back for one image: its size, cell tiles, descriptors and masks."""

    image_id: str
    height: int
    width: int
    tiles: tuple[np.ndarray, ...] | SharedArrays
    """The cells' tiles cut per each of the ensemble's tile specs (``LoadedEnsemble.tile_specs``); in
    shared memory once handed to the main process (:meth:`shared`)."""
    cells: pd.DataFrame
    """One row per cell: image_cutter.py's columns (box, area, border and outlier factors) and
    the centroid."""
    masks: list[str]
    preview: tuple[np.ndarray, np.ndarray] | None = None
    """The colour composite and the cell mask shrunk for a picture (:mod:`hpasc.core.overlays`)."""

    def shared(self, slot: Slot | None) -> ImageCells:
        """These cells with their tiles in shared memory (``slot`` when they fit): what a worker
        hands back."""
        return replace(self, tiles=SharedArrays.put(self.tiles, slot))


def cells_of_image(image_id: str, image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray | None,
                   plan: CellCutter) -> ImageCells:
    regions = ndi.find_objects(cells)  # one pass over the cells for every spec's tiles
    tiles, rows = cut_image(image, cells, nuclei, image_id, [], plan.tile_specs[0], regions)
    others = tuple(crop_cells(image, cells, spec, regions)[2] for spec in plan.tile_specs[1:])
    rows, encoded = describe_cells(cells, rows)
    if plan.save_masks is not None:
        write_label_image(plan.save_masks / f"{image_id}.png", cells)
    preview = None
    if plan.preview:
        small, mask = shrink(image, cells)
        preview = (composite(small.transpose(2, 0, 1)), mask)
    return ImageCells(image_id, image.shape[0], image.shape[1], (tiles, *others), rows, encoded, preview)


def describe_cells(cells: np.ndarray, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The cut's rows with each cell's centroid, and each cell's mask string, from the boxes in
    the rows (no pass over the whole image)."""
    ids = rows["mask_id"].tolist()
    boxes = {mask_id: Box(*corners) for mask_id, *corners in
             zip(ids, rows["y0"].tolist(), rows["x0"].tolist(), rows["y1"].tolist(), rows["x1"].tolist())}
    centroids = cell_centroids(cells, boxes, ids)
    rows = rows.assign(centroid_y=centroids[:, 0].round(1), centroid_x=centroids[:, 1].round(1))
    encoded = encode_cells(cells, ids, {mask_id: box.slices for mask_id, box in boxes.items()})
    return rows, [encoded[mask_id] for mask_id in ids]
