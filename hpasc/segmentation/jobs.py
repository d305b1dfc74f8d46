"""What the Segmenter's pools run in their worker processes, for segmentator.py and infer.py alike.

Nothing here imports torch, nor may anything it imports: a spawned worker imports this module
to run a job, and torch would cost each worker 3 s to start and 500 MB of memory for networks
that only the main process runs (tests/test_workers.py checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hpasc.core.image_folder import ImageFolder, ImageSource
from hpasc.core.shared_arrays import SharedArrays, Slot
from hpasc.segmentation.classical import segment_classical
from hpasc.segmentation.rescaled import label_cell_at_scale
from hpasc.segmentation.scaling import Geometry, prepare, restore_both


class MaskConsumer(Protocol):
    """What a stage makes of an image's masks in a worker (picklable): segmentator.py writes them
    (:class:`~hpasc.stages.segment.outputs.MaskWriter`), infer.py cuts the cells
    (:class:`~hpasc.stages.infer.jobs.CellCutter`). ``image()`` reads the image (only when
    needed); ``slot``: a slot to hand a large result back in (None when none was lent)."""

    def __call__(self, image_id: str, image: Callable[[], np.ndarray], nuclei: np.ndarray, cells: np.ndarray,
                 slot: Slot | None) -> object: ...


def classical_job(source: ImageSource, use: MaskConsumer, slot: Slot | None) -> object:
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


def finish_job(folder: ImageFolder, label_scale: float, use: MaskConsumer, image_id: str, maps: SharedArrays,
               geometry: Geometry, slot: Slot | None) -> object:
    return use(image_id, folder.source(image_id).read, *labels_from_maps(maps, geometry, label_scale), slot)
