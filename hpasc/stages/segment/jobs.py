"""What the pools of segmentator.py (and infer.py) run in their worker processes, and where the
label images go.

Nothing here imports torch, nor may anything it imports: a spawned worker imports this module
to run a job, and torch would cost each worker 3 s to start and 500 MB of memory for networks
that only the main process runs (tests/test_workers.py checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from hpasc.core.image_folder import ImageFolder, ImageSource
from hpasc.core.images import read_label_image, write_label_image, write_png
from hpasc.core.overlays import OverlayIndex, mask_overlay
from hpasc.core.shared_arrays import SharedArrays, Slot
from hpasc.stages.segment.classical import segment_classical
from hpasc.stages.segment.rescaled import label_cell_at_scale
from hpasc.stages.segment.scaling import Geometry, prepare, restore_both


@dataclass(frozen=True)
class Outputs:
    """Where the label images go: ``{cells}/{ID}.png`` and, if asked, ``{nuclei}/{ID}.png``, and
    pictures of the cells' outlines on the image, ``{overlays}/{ID}.png``."""

    cells: Path
    nuclei: Path | None = None
    overlays: Path | None = None

    def paths(self, image_id: str) -> list[Path]:
        folders = [self.cells] + ([self.nuclei] if self.nuclei else [])
        return [folder / f"{image_id}.png" for folder in folders]

    def done(self, image_id: str) -> bool:
        return all(path.is_file() for path in self.paths(image_id))

    def __call__(self, image_id: str, image: Callable[[], np.ndarray], nuclei: np.ndarray, cells: np.ndarray,
                 slot: Slot | None) -> None:
        """:class:`MasksUse`: write them (nothing is handed back, so no slot is ever lent)."""
        self.write(image_id, nuclei, cells, image)

    def write(self, image_id: str, nuclei: np.ndarray, cells: np.ndarray, image: Callable[[], np.ndarray]) -> None:
        """Write the masks (and the picture, of ``image()``: read only when one is asked for)."""
        if self.overlays:
            write_png(self.overlays / f"{image_id}.png", mask_overlay(image(), cells))
        # Nuclei first: an image counts as done once its cell mask exists.
        if self.nuclei:
            write_label_image(self.nuclei / f"{image_id}.png", nuclei)
        write_label_image(self.cells / f"{image_id}.png", cells)

    def write_index(self, ids: list[str]) -> Path | None:
        """The overlays' index.html over the images of ``ids`` that have a picture and a mask."""
        if not self.overlays:
            return None
        index = OverlayIndex(self.overlays, "hpasc segmentation")
        for image_id in ids:
            if (self.overlays / f"{image_id}.png").is_file() and self.done(image_id):
                cells = read_label_image(self.cells / f"{image_id}.png")
                index.entries.append((image_id, f"{image_id}.png", len(np.unique(cells[cells > 0])), {}))
        return index.write()


class MasksUse(Protocol):
    """What a stage makes of an image's masks in a worker (picklable): segmentator.py writes them
    (:class:`Outputs`), infer.py cuts the cells. ``image()`` reads the image (only when needed);
    ``slot``: a slot to hand a large result back in (None when none was lent)."""

    def __call__(self, image_id: str, image: Callable[[], np.ndarray], nuclei: np.ndarray, cells: np.ndarray,
                 slot: Slot | None) -> object: ...


def classical_job(source: ImageSource, use: MasksUse, slot: Slot | None) -> object:
    image = source.read()
    nuclei, cells = segment_classical(image)
    return use(source.image_id, lambda: image, nuclei, cells, slot)


@dataclass(frozen=True)
class PreparedImage:
    """An image's network input (``scaling.NetworkInput.cells``) as a worker hands it over: in
    shared memory, with how it was scaled."""

    planes: SharedArrays
    geometry: Geometry

    @property
    def shape(self) -> tuple[int, ...]:
        return self.planes.shapes[0]


def prepare_job(source: ImageSource, slot: Slot | None) -> PreparedImage:
    prepared = prepare(source.read())
    return PreparedImage(SharedArrays.put([prepared.cells], slot), prepared.geometry)


def labels_from_maps(maps: SharedArrays, geometry: Geometry, label_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The two networks' raw maps (handed over in shared memory, released once restored:
    ``restore`` copies them) → (nucleus labels, cell labels) at the image's size."""
    with maps.opened() as (nuclei, cells):
        restored = restore_both(nuclei, cells, geometry)
    return label_cell_at_scale(*restored, label_scale)


def finish_job(folder: ImageFolder, label_scale: float, use: MasksUse, image_id: str, maps: SharedArrays,
               geometry: Geometry, slot: Slot | None) -> object:
    return use(image_id, folder.source(image_id).read, *labels_from_maps(maps, geometry, label_scale), slot)


def picture_job(source: ImageSource, outputs: Outputs) -> None:
    cells = read_label_image(outputs.cells / f"{source.image_id}.png")
    write_png(outputs.overlays / f"{source.image_id}.png", mask_overlay(source.read(), cells))
