"""What the training loader's worker processes run: a batch's tiles decoded straight into its
shared-memory slot (:class:`~hpasc.core.shared_arrays.SlotRing`), which on CUDA is page-locked, so
a batch crosses to the GPU from where it was decoded, with no copy on the host.

Nothing here imports torch, nor may anything it imports: a spawned worker imports this module to
run a job (tests/test_workers.py checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

from hpasc.cells.crop import resize_tile
from hpasc.cellstore import CellStore
from hpasc.core.images import CHANNELS
from hpasc.core.shared_arrays import SharedArrays, Slot, slot_array


@dataclass
class TileSource:
    """Where cell ``i`` of a training cell set is: row ``row_of[i]`` of ``stores[store_of[i]]``; its
    tiles are read at ``tile_size`` (shrunk with area interpolation when the store's are larger)."""

    stores: list[CellStore]
    store_of: np.ndarray
    row_of: np.ndarray
    tile_size: int

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        return len(CHANNELS), self.tile_size, self.tile_size

    def read_into(self, index: int, out: np.ndarray) -> None:
        """Decode the tile of cell ``index`` into ``out`` (tile_shape, uint16)."""
        store = self.stores[int(self.store_of[index])]
        row = int(self.row_of[index])
        if store.tile_size == self.tile_size:
            store.read_into(row, out)
        else:
            out[...] = resize_tile(store[row].transpose(1, 2, 0), self.tile_size).transpose(2, 0, 1)

    def read_batch(self, indices: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """The tiles of ``indices`` as (len, *tile_shape) uint16, decoded into ``out`` when given."""
        if out is None:
            out = np.empty((len(indices), *self.tile_shape), np.uint16)
        for k, index in enumerate(indices):
            self.read_into(int(index), out[k])
        return out


_SOURCE: list[TileSource] = []  # the worker's source, set once when it starts


def use_source(source: TileSource) -> None:
    """A worker's set-up: the cells it reads for the whole run (sent once, not with every job)."""
    _SOURCE[:] = [source]


def fill(slot: Slot | None, batch_size: int, start: int, indices: Sequence[int]) -> SharedArrays | None:
    """Decode cells ``indices`` into positions ``start``.. of ``slot`` (a (batch_size, 4, S, S)
    uint16 batch); without a slot (shared memory short), hand the tiles back in a block of their
    own, or pickled."""
    source = _SOURCE[0]
    if slot is None:
        return SharedArrays.put([source.read_batch(indices)])
    batch = slot_array(slot, (batch_size, *source.tile_shape), np.uint16)
    source.read_batch(indices, batch[start:start + len(indices)])
    return None
