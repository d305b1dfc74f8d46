"""Where segmentator.py's label images go (its :class:`~hpasc.segmentation.jobs.MaskConsumer`), and the
pictures of them; run in the Segmenter's worker processes, so nothing here imports torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc.core.image_folder import ImageSource
from hpasc.core.images import read_label_image, write_label_image, write_png
from hpasc.core.overlays import OverlayIndex, mask_overlay
from hpasc.core.shared_arrays import Slot


@dataclass(frozen=True)
class MaskWriter:
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
        """:class:`MaskConsumer`: write them (nothing is handed back, so no slot is ever lent)."""
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


def picture_job(source: ImageSource, outputs: MaskWriter) -> None:
    cells = read_label_image(outputs.cells / f"{source.image_id}.png")
    write_png(outputs.overlays / f"{source.image_id}.png", mask_overlay(source.read(), cells))
