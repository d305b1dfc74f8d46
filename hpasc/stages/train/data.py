"""The cells that training sees: every store of a split (the dataset and its extra datasets) behind
one index, the tile dataset that DataLoader workers read, and the loaders built on it.

Workers only read tiles (and shrink them to the training tile size); labels stay in the main
process and are looked up by index, and augmentation runs on the training device in batches
(:mod:`hpasc.stages.train.augment`), so a worker's whole job is decompressing tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hpasc.cells.crop import resize_tile
from hpasc.cells.provenance import read_provenance
from hpasc.cells.tile_spec import TileSpec
from hpasc.cellstore import CellStore, cut_mismatch, open_cells
from hpasc.core import threads
from hpasc.core.classes import parse_labels
from hpasc.core.errors import InputError
from hpasc.stages.split.stage import Split

log = logging.getLogger(__name__)

CELL_SETS = ("train", "validation", "all")


@dataclass
class CellSet:
    """Cells of one or more stores; row ``i`` of ``table`` is ``stores[table.store[i]]`` row
    ``table.row[i]``. ``table`` has the stores' columns plus ``store``, ``row`` and ``label_list``
    (the image-level labels as lists of ints)."""

    stores: list[CellStore]
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.table)

    @property
    def tile_size(self) -> int:
        return self.stores[0].tile_size

    @property
    def tile_spec(self) -> TileSpec:
        """How the tiles were cut (the first store's spec; :func:`load_cells` checks they agree)."""
        return self.stores[0].tile_spec

    @property
    def segmentation(self) -> dict | None:
        """Which segmentation made the first store's masks (its ``segmentation.json``), or None."""
        provenance = read_provenance(self.stores[0].root)
        return None if provenance is None else provenance.to_dict()

    @property
    def cell_ids(self) -> list[str]:
        return self.table["cell_id"].tolist()

    @property
    def image_labels(self) -> list[list[int]]:
        return self.table["label_list"].tolist()

    def rows_of_images(self, image_ids: Sequence[str]) -> np.ndarray:
        """Indices of the cells of ``image_ids``."""
        return np.flatnonzero(self.table["image_id"].isin(set(image_ids)).to_numpy())

    def kept_rows(self, which: str, split: Split) -> np.ndarray:
        """Sorted indices of the kept cells of the split's ``train`` images, ``validation``
        images, or ``all`` of them."""
        keep = self.table["keep"].to_numpy(bool)
        if which == "all":
            return np.flatnonzero(keep)
        rows = self.rows_of_images(split.train_images if which == "train" else split.validation_images)
        return rows[keep[rows]]

    def tile(self, index: int) -> np.ndarray:
        store = self._store_of[index]
        return self.stores[store][int(self._row_of[index])]

    def __post_init__(self) -> None:
        self._store_of = self.table["store"].to_numpy()
        self._row_of = self.table["row"].to_numpy()


def load_cells(split: Split) -> CellSet:
    """Open every store the split names and join their tables (images of the split only)."""
    stores, tables = [], []
    wanted = set(split.image_folds)
    for number, (name, folder) in enumerate(split.sources.items()):
        store = open_cells(folder)
        table = store.table.assign(store=number, row=np.arange(len(store.table)))
        table = table[table["image_id"].isin(wanted)]
        stores.append(store)
        tables.append(table)
        log.debug("source %s: %d cells", name, len(table))
    mismatch = next(filter(None, (cut_mismatch(stores[0].tile_spec, s.tile_spec) for s in stores[1:])), None)
    if mismatch:
        raise InputError(f"the split's datasets were cut differently ({mismatch}); cut them with the same "
                         "image_cutter.py --size/--mode/--context/--zero/--margin")
    table = pd.concat(tables, ignore_index=True)
    duplicated = table["cell_id"].duplicated()
    if duplicated.any():
        raise InputError(f"cell {table['cell_id'][duplicated].iloc[0]} is in two of the split's datasets")
    table["label_list"] = [parse_labels(text) for text in table["labels"].fillna("")]
    return CellSet(stores, table)


class TileDataset(Dataset):
    """``dataset[i]`` → (tile i as a (4, S, S) uint16 tensor, i), shrunk to ``tile_size`` with
    area interpolation when the store's tiles are larger (OpenCV, in the worker)."""

    def __init__(self, cells: CellSet, tile_size: int) -> None:
        self.cells = cells
        self.tile_size = int(tile_size)

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tile = self.cells.tile(index)
        if tile.shape[-1] != self.tile_size:
            tile = np.ascontiguousarray(resize_tile(tile.transpose(1, 2, 0), self.tile_size).transpose(2, 0, 1))
        return torch.from_numpy(tile), index


class EpochBatches(Sampler[list[int]]):
    """Batches of the current epoch's cell indices; ``set_indices`` swaps the epoch's sample in
    the main process, so persistent workers keep running across epochs."""

    def __init__(self, batch_size: int, drop_last: bool) -> None:
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.indices = np.empty(0, np.int64)

    def set_indices(self, indices: np.ndarray) -> None:
        self.indices = np.asarray(indices, np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, len(self.indices)), self.batch_size):
            yield self.indices[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        full, rest = divmod(len(self.indices), self.batch_size)
        return full + (0 if self.drop_last or not rest else 1)


def _worker_init(_: int) -> None:
    info = torch.utils.data.get_worker_info()
    threads.limit_threads(threads.helper_share(info.num_workers))


def loader_workers(workers: int, device: torch.device) -> int:
    """The DataLoader workers a model on ``device`` needs of ``workers``: none on the CPU (the
    main process reads the tiles), because decoding a batch costs about 1 % of the model's step
    there, so the cores serve the model's own threads better (:mod:`hpasc.core.threads`)."""
    return 0 if device.type == "cpu" else workers


def create_loader(dataset: TileDataset, batches: Sampler[list[int]], workers: int,
                  pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` in the order of ``batches`` with ``workers`` processes
    (0 = read in the main process). Workers persist across epochs."""
    threads.share_cores(workers)
    # A private generator: a loader drawing its worker seeds from the global one would shift the
    # dropout draws of the first epoch after a resume.
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, worker_init_fn=_worker_init if workers else None,
                      prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0))


def fixed_batches(indices: np.ndarray, batch_size: int) -> EpochBatches:
    """Batches over ``indices`` in order, the last one possibly short (validation, scoring)."""
    batches = EpochBatches(batch_size, drop_last=False)
    batches.set_indices(indices)
    return batches

