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

import numpy as np

from hpasc.image_folder import ImageFolder, ImageSource
from hpasc.images import read_label_image, write_label_image, write_png
from hpasc.overlays import OverlayIndex, mask_overlay
from hpasc.segmentation.classical import segment_classical
from hpasc.segmentation.rescaled import label_cell_at_scale
from hpasc.segmentation.scaling import Geometry, NetworkInput, prepare, restore_both


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


def classical_job(source: ImageSource, outputs: Outputs) -> None:
    image = source.read()
    nuclei, cells = segment_classical(image)
    outputs.write(source.image_id, nuclei, cells, lambda: image)


def prepare_job(source: ImageSource) -> NetworkInput:
    return prepare(source.read())


def finish_labels(nuclei: np.ndarray, cells: np.ndarray, geometry: Geometry,
                  label_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Raw network outputs → (nucleus labels, cell labels) at the image's size."""
    return label_cell_at_scale(*restore_both(nuclei, cells, geometry), label_scale)


def finish_job(outputs: Outputs, folder: ImageFolder, label_scale: float, image_id: str, nuclei: np.ndarray,
               cells: np.ndarray, geometry: Geometry) -> None:
    outputs.write(image_id, *finish_labels(nuclei, cells, geometry, label_scale),
                  folder.source(image_id).read)


def picture_job(source: ImageSource, outputs: Outputs) -> None:
    cells = read_label_image(outputs.cells / f"{source.image_id}.png")
    write_png(outputs.overlays / f"{source.image_id}.png", mask_overlay(source.read(), cells))
