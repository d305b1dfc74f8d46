"""The image_cutter stage: every cell of every image → a row and a tile in a cell dataset folder.

Images are cut in a spawn process pool, each written to the cell store as one atomic unit, so a
crashed run is resumed by running it again (complete images are skipped, a half-written one is
redone). Shards (``--shard K/N``) write into the same folder; every run ends by merging the table
of all complete images, which copies no tiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc import cellstore
from hpasc.cells.cut import cut_image
from hpasc.cells.provenance import UNKNOWN, read_provenance, record_provenance
from hpasc.cells.tile_spec import TileSpec
from hpasc.core import atomic, runtime
from hpasc.core.classes import read_label_table
from hpasc.core.errors import InputError
from hpasc.core.image_folder import ImageFolder, ImageSource
from hpasc.core.images import read_label_image
from hpasc.core.workers import collect_failures, process_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskFolders:
    """Where an image's masks are: ``{cells}/{ID}{suffix}.png`` (e.g. HPA's ``_cellmask``) and,
    optionally, ``{nuclei}/{ID}.png``."""

    cells: Path
    nuclei: Path | None = None
    suffix: str = ""

    def cell_mask(self, image_id: str) -> Path:
        return self.cells / f"{image_id}{self.suffix}.png"

    def read(self, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        masks = [self._read(self.cell_mask(image_id), image_id, shape)]
        masks.append(self._read(self.nuclei / f"{image_id}.png", image_id, shape) if self.nuclei else None)
        return masks[0], masks[1]

    def check_any(self, ids: list[str]) -> None:
        """Refuse (InputError) a cell mask folder that holds no mask of these images: every image
        would fail alone, one line each, where one line says what name was looked for."""
        if ids and not any(self.cell_mask(i).is_file() for i in ids):
            raise InputError(f"{self.cells}: no cell mask of any of the {len(ids)} images (looked for "
                             f"{{ID}}{self.suffix}.png, e.g. {self.cell_mask(ids[0]).name}); if the masks are named "
                             "{ID}_cellmask.png, say --mask-suffix _cellmask")

    @staticmethod
    def _read(path: Path, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        if not path.is_file():
            raise InputError(f"{image_id}: no mask {path}")
        mask = read_label_image(path)
        if mask.shape != shape:
            raise InputError(f"{image_id}: mask {path} is {mask.shape[1]}x{mask.shape[0]}, "
                             f"the image {shape[1]}x{shape[0]}")
        return mask


def _cut_job(source: ImageSource, masks: MaskFolders, labels: list[int], out: Path, spec: TileSpec) -> int:
    image_id, image = source.image_id, source.read()
    cells, nuclei = masks.read(image_id, image.shape[:2])
    tiles, rows = cut_image(image, cells, nuclei, image_id, labels, spec)
    cellstore.write_image(out, image_id, tiles, rows, spec)
    return len(rows)


def default_nuclei_folder(cells: Path) -> Path | None:
    """segmentator.py's sibling nucleus folder (``train_cells`` → ``train_nuclei``), if present."""
    candidate = cells.with_name(cells.name.replace("cells", "nuclei"))
    return candidate if candidate != cells and candidate.is_dir() else None


def find_labels_csv(images: Path) -> Path:
    """The Kaggle layout's ``train.csv`` beside the image folder, else a labels file inside it."""
    candidates = [images.parent / "train.csv", images / "train.csv", images / "labels.csv"]
    for path in candidates:
        if path.is_file():
            return path
    raise InputError(f"no labels CSV found (looked for {', '.join(map(str, candidates))}); "
                     "pass --labels CSV, or --no-labels for unlabelled images")


def cut_folder(folder: ImageFolder, masks: MaskFolders, labels: dict[str, list[int]] | None, out: Path,
               spec: TileSpec, options: runtime.CommonOptions) -> list[str]:
    """Cut the images of ``folder`` that the store in ``out`` lacks; returns the failed IDs."""
    for masks_folder in filter(None, (masks.cells, masks.nuclei)):
        if not masks_folder.is_dir():  # else every image would fail alone, one line each
            raise InputError(f"{masks_folder}: no such masks folder (hpasc-segment -c/-n writes them)")
    cellstore.check_cut(out, spec)
    done = cellstore.done_images(out)
    ids, todo = runtime.plan_work(folder.ids, done.__contains__, options, "already cut")
    masks.check_any(todo)
    atomic.remove_abandoned(out)
    unlabelled = [i for i in todo if labels is not None and i not in labels]
    if unlabelled:
        log.warning("%d images have no labels in the labels CSV (e.g. %s); their cells get none",
                    len(unlabelled), unlabelled[0])
    failures = folder.failures(options.shard.select)
    if todo:  # the store keeps which segmentation its cell ids refer to
        record_provenance(out, read_provenance(masks.cells) or UNKNOWN, keeps_others=len(todo) < len(ids))
    log.info("%d images, %d to cut into %d px tiles", len(ids), len(todo), spec.size)
    with process_pool(options.workers) as pool:
        futures = {pool.submit(_cut_job, folder.source(i), masks,
                               (labels or {}).get(i, []), out, spec): i for i in todo}
        failures |= collect_failures(futures, options)
    held = ""
    if cellstore.done_images(out):
        table = cellstore.merge(out)
        held = (f"; the dataset holds {len(table)} cells of {table['image_id'].nunique()} images "
                f"({int(table['keep'].sum())} kept for training)")
    runtime.log_failures(failures)
    runtime.log_done(f"{len(set(todo) - set(failures))} images cut, {len(ids) - len(todo)} cut before{held}",
                     len(failures), out)
    return sorted(failures)


def read_labels(images: Path, labels_csv: Path | None, no_labels: bool) -> dict[str, list[int]] | None:
    """The image labels to store: from ``labels_csv``, the default location, or none at all."""
    if no_labels:
        return None
    if labels_csv is None and not images.is_dir():  # say that first, not "no labels found"
        raise InputError(f"image folder {images} does not exist or is not a folder")
    return read_label_table(labels_csv or find_labels_csv(images))
