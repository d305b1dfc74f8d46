"""Large arrays handed between a stage's processes through shared memory, not through its pipes.

A worker's cell tiles (25 cells × 2 MiB per 2048² image) or HPA's network maps pickled through a
pool's pipe cost the one main process a serialisation, a pipe read and a copy each: 130 ms of its
time per image with 7 checkpoints, the limit of the whole stage on a GPU machine. Here the sender
writes the arrays once into shared memory and only the block's name and the arrays' layout travel
(a few hundred bytes); the receiver reads the arrays in place.

Two kinds of block:
- a :class:`SlotRing`'s slots: blocks of one size that the main process creates once, keeps mapped
  for the whole stage (and on CUDA pins, so the GPU copies from them directly) and lends to one job
  at a time. Mapping a fresh block, touching its pages and freeing them cost the main process
  10-20 ms per 40 MB image; a slot costs it that once per stage.
- a block of its own, made by the sender when no slot was lent or the arrays outgrow it; the
  receiver unlinks it when done.

Ownership: whoever receives a :class:`SharedArrays` calls :meth:`SharedArrays.release` when done
(``with shared.opened() as arrays`` does), which unlinks a block of its own; a slot comes back to
its ring when the process that lent it settles the job (:meth:`SlotRing.settle`). Blocks received
and never released (a stage stopped by ^C with results in flight) are unlinked by
:func:`release_unclaimed`; after a crash, multiprocessing's resource tracker unlinks every block
when the stage's main process is gone. Where shared memory is short (a container's small
``/dev/shm``) the arrays travel pickled, as before: slower, never wrong.

Torch-free: the pools' workers import this.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import resource
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

log = logging.getLogger(__name__)

_ALIGN = 64  # each array starts on a cache line
_SHM_FOLDER = "/dev/shm"
_UNCLAIMED: set[str] = set()  # blocks of their own received here and not yet released
_RINGS: dict[str, SlotRing] = {}  # this process's slots, by block name
_ATTACHED: dict[str, SharedMemory] = {}  # other processes' slots this one writes into, kept mapped


@dataclass(frozen=True)
class _Layout:
    shape: tuple[int, ...]
    dtype: str
    offset: int


@dataclass(frozen=True)
class Slot:
    """A ring's block lent to one job: what the job needs to write into it."""

    name: str
    size: int


class SharedArrays:
    """A sequence of numpy arrays in shared memory (a lent slot or a block of its own), or inline
    where no shared memory could be had."""

    def __init__(self, name: str | None, layouts: tuple[_Layout, ...], inline: tuple[np.ndarray, ...] | None,
                 lent: bool = False):
        self.name, self.layouts, self.inline, self.lent = name, layouts, inline, lent
        self._block: SharedMemory | None = None

    @classmethod
    def put(cls, arrays: Sequence[np.ndarray], slot: Slot | None = None) -> SharedArrays:
        """Copy ``arrays`` into ``slot`` when they fit, else into a new block (this process keeps
        no mapping of either)."""
        arrays = [np.ascontiguousarray(a) for a in arrays]
        shared = cls.empty([(a.shape, a.dtype) for a in arrays], slot)
        if shared.inline is not None:
            return cls(None, shared.layouts, tuple(arrays))
        for view, array in zip(shared.arrays(), arrays):
            view[...] = array
        return shared.filled()

    @classmethod
    def empty(cls, kinds: Sequence[tuple[tuple[int, ...], np.dtype | str]], slot: Slot | None = None) -> SharedArrays:
        """Arrays of these (shape, dtype) for this process to fill in place through :meth:`arrays`
        before it sends them: in ``slot`` when they fit (e.g. page-locked, for a copy from the GPU),
        else in a new block, else inline where shared memory is short."""
        layouts, size = [], 0
        for shape, dtype in kinds:
            dtype = np.dtype(dtype)
            layouts.append(_Layout(tuple(shape), dtype.str, size))
            size += -(-int(np.prod(shape)) * dtype.itemsize // _ALIGN) * _ALIGN
        lent = slot is not None and size <= slot.size
        block = _slot_block(slot.name) if lent else _create(max(size, 1))
        if block is None:
            return cls(None, tuple(layouts), tuple(np.empty(l.shape, l.dtype) for l in layouts))
        shared = cls(block.name, tuple(layouts), None, lent)
        shared._block = block
        return shared

    def filled(self) -> SharedArrays:
        """Done writing the arrays of :meth:`empty` here: this process's mapping of a block is
        closed (a ring's lasting one stays), the arrays stay for whoever receives this."""
        if self._block is not None and self.name not in _RINGS:
            self._block.close()
        self._block = None
        return self

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [layout.shape for layout in self.layouts]

    def arrays(self) -> list[np.ndarray]:
        """The arrays, read in place: valid until :meth:`release`, which must not come while any
        of them (or a view of one) is still in use."""
        if self.inline is not None:
            return list(self.inline)
        if self._block is None:
            self._block = _slot_block(self.name) if self.lent else SharedMemory(self.name)
        return [_view(self._block, layout) for layout in self.layouts]

    def release(self) -> None:
        """Done with the arrays (invalid afterwards): a block of its own is unlinked; a slot stays
        its ring's, which takes it back when the lender settles the job (:meth:`SlotRing.settle`)."""
        if self.inline is not None:
            self.inline = ()
            return
        block, self._block = self._block, None
        if self.lent:
            if block is not None and self.name not in _RINGS:
                block.close()
            return
        _UNCLAIMED.discard(self.name)
        block = block or SharedMemory(self.name)
        block.unlink()
        block.close()

    def discard(self) -> None:
        """Release the arrays if their block is still there (one whose receiver may never have run)."""
        with contextlib.suppress(FileNotFoundError):
            self.release()

    @contextlib.contextmanager
    def opened(self) -> Iterator[list[np.ndarray]]:
        """The arrays for the block, released after it (keep no reference to them past it)."""
        try:
            yield self.arrays()
        finally:
            self.release()

    def __reduce__(self):
        return _received, (self.name, self.layouts, self.inline, self.lent)


def _received(name: str | None, layouts: tuple[_Layout, ...], inline: tuple[np.ndarray, ...] | None,
              lent: bool) -> SharedArrays:
    if name is not None and not lent:
        _UNCLAIMED.add(name)
    return SharedArrays(name, layouts, inline, lent)


def release_unclaimed() -> int:
    """Unlink every block of its own received in this process and not released; how many."""
    names = list(_UNCLAIMED)
    for name in names:
        SharedArrays(name, (), None).discard()
    _UNCLAIMED.clear()
    return len(names)


class SlotRing:
    """``count`` blocks of ``size`` bytes, made when the ring is (a stage's start-up, beside loading
    its models), mapped here for the ring's life with every page touched, and lent to one job at a
    time; ``pin`` (e.g. CUDA's host registration) is applied to each block's memory once. Made up
    front because a block's first use costs its maker the pages' zeroing and mapping (~15 ms per
    64 MiB): in the stage's loop that would be per image until every slot had been used once."""

    def __init__(self, count: int, size: int, pin: Callable[[memoryview], Callable[[], None]] | None = None):
        self.count, self.size, self.pin = count, size, pin
        self.blocks: dict[str, SharedMemory] = {}
        self.unpins: list[Callable[[], None]] = []
        self.free: list[str] = []
        self.loans: dict[Hashable, str] = {}
        self._lock = threading.Lock()  # a receiver on another thread may settle (infer.py's scoring)
        while len(self.blocks) < count and self._grow():
            pass

    def lend(self, key: Hashable) -> Slot | None:
        """A free slot for the job known as ``key`` until :meth:`settle`, or None (all lent, or
        shared memory short: the job makes a block of its own)."""
        with self._lock:
            if not self.free:
                return None
            self.loans[key] = self.free.pop()
            return Slot(self.loans[key], self.size)

    def settle(self, key: Hashable) -> None:
        """The job ``key`` and its receiver are done with its slot (if it had one): lend it again.
        The one way a slot comes back, whether the job used it, outgrew it or failed."""
        with self._lock:
            name = self.loans.pop(key, None)
            if name is not None:
                self.free.append(name)

    def _grow(self) -> bool:
        block = _create(self.size)
        if block is None:
            log.warning("shared memory is short (%d of %d slots of %d MiB): the other images travel in blocks "
                        "of their own or pickled, slower (in Docker: --ipc=host or a larger --shm-size)",
                        len(self.blocks), self.count, self.size >> 20)
            return False
        np.frombuffer(block.buf, np.uint8)[::mmap.PAGESIZE].sum()  # map every page here now
        self.blocks[block.name] = block
        _RINGS[block.name] = self
        if self.pin is not None:
            self.unpins.append(self.pin(block.buf))
        self.free.append(block.name)
        return True

    def close(self) -> None:
        """Unlink every slot (none may be in use)."""
        for unpin in self.unpins:
            unpin()
        for name, block in self.blocks.items():
            _RINGS.pop(name, None)
            block.unlink()
            block.close()
        self.blocks, self.free, self.unpins, self.loans = {}, [], [], {}

    def __enter__(self) -> SlotRing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def slot_array(slot: Slot, shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """A lent slot as an array of ``shape`` to write into in place. The mapping is made once per
    process and kept: a worker that fills the same few slots all run long would otherwise fault in
    their pages (~2 µs per 4 KiB) on every job."""
    block = _RINGS[slot.name].blocks[slot.name] if slot.name in _RINGS else _ATTACHED.get(slot.name)
    if block is None:
        block = _ATTACHED[slot.name] = SharedMemory(slot.name)
    return np.ndarray(shape, np.dtype(dtype), buffer=block.buf)


def _slot_block(name: str) -> SharedMemory:
    """A slot's block: this process's lasting mapping when it owns the ring, else a new mapping."""
    ring = _RINGS.get(name)
    return ring.blocks[name] if ring is not None else SharedMemory(name)


def _view(block: SharedMemory, layout: _Layout) -> np.ndarray:
    return np.ndarray(layout.shape, np.dtype(layout.dtype), buffer=block.buf, offset=layout.offset)


def _create(size: int) -> SharedMemory | None:
    """A new block with its pages reserved, or None where shared memory is short: a block merely
    sized would kill its writer (SIGBUS) on the first page that the full memory cannot hold."""
    if size > _free_bytes():
        log.debug("shared memory has less than %d bytes free: the arrays travel pickled", size)
        return None
    try:
        block = SharedMemory(create=True, size=size)
    except OSError as exc:
        log.debug("no shared memory block of %d bytes (%s): the arrays travel pickled", size, exc)
        return None
    descriptor = getattr(block, "_fd", -1)  # POSIX only; elsewhere nothing to reserve
    if descriptor >= 0 and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(descriptor, 0, size)
        except OSError as exc:
            block.close()
            block.unlink()
            log.debug("shared memory is short for %d bytes (%s): the arrays travel pickled", size, exc)
            return None
    return block


def _free_bytes() -> float:
    """The largest block this process can make: the free bytes of the file system behind POSIX
    shared memory (Linux's /dev/shm; elsewhere unknown, infinite: the reservation decides), at most
    its file size limit (``ulimit -f``). Over that limit, Python 3.11's SharedMemory fails inside
    its constructor and unregisters the block from the resource tracker before registering it:
    the tracker prints a KeyError traceback per block."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    largest = float("inf") if limit == resource.RLIM_INFINITY else float(limit)
    try:
        stats = os.statvfs(_SHM_FOLDER)
    except OSError:
        return largest
    return min(largest, stats.f_bavail * stats.f_frsize)
