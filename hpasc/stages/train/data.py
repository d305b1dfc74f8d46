"""The cells that training sees: every store of a split (the dataset and its extra datasets) behind
one index, and the reader that hands their tiles to a model batch by batch.

Workers only read tiles (and shrink them to the training tile size); labels stay in the main
process and are looked up by index, and augmentation runs on the training device in batches
(:mod:`hpasc.stages.train.augment`), so a worker's whole job is decompressing tiles into the
batch's shared-memory slot (:mod:`hpasc.stages.train.tile_jobs`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from hpasc.cells.provenance import read_provenance
from hpasc.cells.tile_spec import TileSpec
from hpasc.cellstore import CellStore, open_cells
from hpasc.core.classes import parse_labels
from hpasc.core.errors import InputError
from hpasc.core.shared_arrays import Slot, SlotRing, slot_array
from hpasc.core.workers import process_pool
from hpasc.models.pinning import page_locker
from hpasc.cellstore.split import Split
from hpasc.stages.train import tile_jobs
from hpasc.stages.train.tile_jobs import TileSource

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

    def source(self, tile_size: int) -> TileSource:
        """Where each cell's tile is, for reading them at ``tile_size`` (what loader workers get)."""
        return TileSource(self.stores, self._store_of, self._row_of, tile_size)

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
    mismatch = next(filter(None, (stores[0].tile_spec.mismatch(s.tile_spec, size=True) for s in stores[1:])), None)
    if mismatch:
        raise InputError(f"the split's datasets were cut differently ({mismatch}); cut them with the same "
                         "hpasc-cut --size/--mode/--context/--zero/--margin")
    table = pd.concat(tables, ignore_index=True)
    duplicated = table["cell_id"].duplicated()
    if duplicated.any():
        raise InputError(f"cell {table['cell_id'][duplicated].iloc[0]} is in two of the split's datasets")
    table["label_list"] = [parse_labels(text) for text in table["labels"].fillna("")]
    return CellSet(stores, table)


class EpochBatches(Sampler[list[int]]):
    """Batches of the current epoch's cell indices; ``set_indices`` swaps the epoch's sample in
    the main process, so the reader's workers keep running across epochs."""

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


def loader_workers(workers: int, device: torch.device) -> int:
    """The loader processes a model on ``device`` needs of ``workers``: none on the CPU (the main
    process reads the tiles), because decoding a batch costs about 1 % of the model's step there,
    so the cores serve the model's own threads better (:mod:`hpasc.core.threads`)."""
    return 0 if device.type == "cpu" else workers


class TileReader:
    """The tiles of a cell set, read batch by batch for a model on ``device``.

    With ``workers`` processes, each batch is decoded by them straight into a slot of a ring of
    shared-memory blocks that this process maps once (and on CUDA page-locks once), split into
    jobs of a few tiles, ``depth`` batches ahead of the model: a batch reaches the model without a
    copy on the host, and this process handles only the jobs' small messages. Without workers this
    process decodes each batch itself. Either way a batch holds exactly the bytes the store holds
    (shrunk the same way when smaller tiles are asked for).

    Use it as a context manager (its workers and slots live for the block); :meth:`batches` gives
    one pass over a sampler's batches, as many passes as wanted.
    """

    def __init__(self, cells: CellSet, tile_size: int, batch_size: int, workers: int, device: torch.device,
                 depth: int = 4) -> None:
        self.source = cells.source(tile_size)
        self.batch_size, self.workers, self.device, self.depth = batch_size, workers, device, depth
        self.chunk = max(-(-batch_size // max(workers, 1)), 8)  # tiles per job: few messages, all workers busy
        self._stack = contextlib.ExitStack()
        self._pool: ProcessPoolExecutor | None = None
        self._ring: SlotRing | None = None
        self._keys = itertools.count()

    def __enter__(self) -> TileReader:
        if self.workers:
            slot = self.batch_size * int(np.prod(self.source.tile_shape)) * 2
            # depth batches being decoded, one the model has, one still crossing to the GPU
            self._ring = self._stack.enter_context(SlotRing(self.depth + 2, slot, page_locker(self.device)))
            setup = functools.partial(tile_jobs.use_source, self.source)
            self._pool = self._stack.enter_context(process_pool(self.workers, setup))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def batches(self, sampler: Sampler[list[int]]) -> Batches:
        """One pass over ``sampler``'s batches: ``(tiles, indices)``, tiles a (B, 4, S, S) uint16
        tensor on the device, indices an int64 tensor."""
        return Batches(self, sampler)

    def _read(self, sampler: Sampler[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._pool is None:
            for indices in sampler:
                yield torch.from_numpy(self.source.read_batch(indices)).to(self.device), torch.as_tensor(indices)
            return
        pending: collections.deque[_Job] = collections.deque()
        crossing: collections.deque[tuple[int, torch.cuda.Event | None]] = collections.deque()
        upcoming = iter(sampler)
        try:
            for indices in itertools.islice(upcoming, self.depth):
                pending.append(self._submit(indices, crossing))
            while pending:
                job = pending.popleft()
                batch, event = self._collect(job)
                crossing.append((job.key, event))
                following = next(upcoming, None)
                if following is not None:
                    pending.append(self._submit(following, crossing))
                yield batch, torch.as_tensor(job.indices)
                if event is None:  # the model has used the batch in place, and is done with it
                    self._settle(crossing, everything=True)
        finally:
            for job in pending:  # a pass left early: its jobs finish before their slots are lent again
                for future in job.futures:
                    future.exception()
                self._ring.settle(job.key)
            self._settle(crossing, everything=True)

    def _submit(self, indices: list[int], crossing: collections.deque) -> _Job:
        """Lend the batch a slot (the oldest batch still crossing to the GPU waited for when none is
        free) and give its tiles to the workers in jobs of ``chunk``."""
        self._settle(crossing, everything=False)
        key = next(self._keys)
        slot = self._ring.lend(key)
        if slot is None and self.device.type == "cuda" and crossing:
            self._settle(crossing, everything=True)
            slot = self._ring.lend(key)
        futures = [self._pool.submit(tile_jobs.fill, slot, self.batch_size, start, indices[start:start + self.chunk])
                   for start in range(0, len(indices), self.chunk)]
        return _Job(key, slot, indices, futures)

    def _collect(self, job: _Job) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The job's batch on the device once its workers are done (their errors raised here), and
        the event after which its slot may be lent again (None: once the model has used it)."""
        parts = [future.result() for future in job.futures]
        if job.slot is None:  # shared memory was short: the tiles came in blocks of their own
            tiles = np.concatenate([part.arrays()[0] for part in parts])
            for part in parts:
                part.release()
            return torch.from_numpy(tiles).to(self.device), None
        tiles = slot_array(job.slot, (self.batch_size, *self.source.tile_shape), np.uint16)[:len(job.indices)]
        batch = torch.from_numpy(tiles).to(self.device, non_blocking=True)
        if self.device.type != "cuda":
            return batch, None
        event = torch.cuda.Event()
        event.record()
        return batch, event

    def _settle(self, crossing: collections.deque, everything: bool) -> None:
        """Give back the slots of batches that have reached the model's device (``everything``:
        all of them, waiting for their copies)."""
        while crossing:
            key, event = crossing[0]
            if not everything and (event is None or not event.query()):
                return
            if event is not None:
                event.synchronize()
            self._ring.settle(key)
            crossing.popleft()


@dataclass
class _Job:
    key: int
    slot: Slot | None
    indices: list[int]
    futures: list[Future]


class Batches:
    """One pass of a :class:`TileReader` over a sampler's batches (``len`` is their count)."""

    def __init__(self, reader: TileReader, sampler: Sampler[list[int]]) -> None:
        self.reader, self.sampler = reader, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.reader._read(self.sampler)


def fixed_batches(indices: np.ndarray, batch_size: int) -> EpochBatches:
    """Batches over ``indices`` in order, the last one possibly short (validation, scoring)."""
    batches = EpochBatches(batch_size, drop_last=False)
    batches.set_indices(indices)
    return batches

