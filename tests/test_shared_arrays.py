"""Arrays handed between processes in shared memory: slots lent by the main process and written by
spawned workers, blocks of their own when the arrays outgrow a slot, nothing left in /dev/shm
afterwards, and no slot at all where shared memory is short."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from hpasc.core.shared_arrays import SharedArrays, Slot, SlotRing, release_unclaimed
from hpasc.core.workers import process_pool

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="POSIX shared memory is listed in /dev/shm on Linux")


def tiles(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65535, (count, 4, 64, 64), dtype=np.uint16)


def put_tiles(count: int, seed: int, slot: Slot | None) -> SharedArrays:
    """A worker's job: its tiles and a small table handed back in ``slot`` (or a block of their own)."""
    return SharedArrays.put([tiles(count, seed), np.arange(count, dtype=np.int64)], slot)


def blocks() -> set[str]:
    return {path.name for path in SHM.iterdir()}


def test_workers_write_into_lent_slots_and_the_slots_come_back() -> None:
    with SlotRing(2, 1 << 20) as ring, process_pool(2) as pool:
        names = set(ring.blocks)
        assert len(names) == 2 and names <= blocks()
        for round_ in range(3):  # each slot is lent again once settled
            jobs = {key: pool.submit(put_tiles, 5 + key, key + 10 * round_, ring.lend(key)) for key in (0, 1)}
            assert ring.lend("a third job") is None  # both lent
            for key, job in jobs.items():
                shared = job.result()
                assert shared.lent and shared.name in names
                with shared.opened() as (got, index):
                    np.testing.assert_array_equal(got, tiles(5 + key, key + 10 * round_))
                    np.testing.assert_array_equal(index, np.arange(5 + key))
                ring.settle(key)
            assert sorted(ring.free) == sorted(names)
    assert not names & blocks()


def test_arrays_that_outgrow_their_slot_travel_in_a_block_of_their_own() -> None:
    with SlotRing(1, 4096) as ring, process_pool(1) as pool:
        slot = set(ring.blocks)
        shared = pool.submit(put_tiles, 3, 7, ring.lend("big")).result()
        assert not shared.lent and shared.name in blocks()
        with shared.opened() as (got, _):
            np.testing.assert_array_equal(got, tiles(3, 7))
        assert shared.name not in blocks()  # its receiver unlinked it
        ring.settle("big")
        assert ring.lend("next") is not None
    assert not slot & blocks()


def read_in_worker(shared: SharedArrays) -> list[np.ndarray]:
    """A worker's side: the arrays it received, copied out, and released."""
    with shared.opened() as arrays:
        return [array.copy() for array in arrays]


@pytest.mark.parametrize("slot_size", [1 << 20, 4096])
def test_arrays_filled_in_place_here_reach_a_worker(slot_size: int) -> None:
    """What the main process fills itself (HPA's maps, copied there from the GPU): in its slot where
    they fit, else in a block of their own that the receiver unlinks."""
    with SlotRing(1, slot_size) as ring, process_pool(1) as pool:
        shared = SharedArrays.empty([((3, 32, 32), np.float32), ((5,), np.int64)], ring.lend("maps"))
        assert shared.lent is (slot_size == 1 << 20) and (shared.name in ring.blocks) is shared.lent
        first, second = shared.arrays()
        first[...], second[...] = 1.5, np.arange(5)
        got = pool.submit(read_in_worker, shared.filled()).result()
        np.testing.assert_array_equal(got[0], np.full((3, 32, 32), 1.5, np.float32))
        np.testing.assert_array_equal(got[1], np.arange(5))
        ring.settle("maps")
        assert (shared.name in blocks()) is shared.lent  # a block of its own was unlinked by its receiver


def test_blocks_received_and_never_released_are_unlinked() -> None:
    with process_pool(1) as pool:
        shared = pool.submit(put_tiles, 2, 1, None).result()
        assert shared.name in blocks()
        assert release_unclaimed() == 1
        assert shared.name not in blocks()


def test_a_pool_stopped_with_results_in_flight_leaves_no_block() -> None:
    received = []
    with pytest.raises(KeyboardInterrupt):
        with process_pool(2) as pool:
            jobs = [pool.submit(put_tiles, 2, seed, None) for seed in range(4)]
            received = [job.result().name for job in jobs]
            assert set(received) <= blocks()
            raise KeyboardInterrupt  # as ^C would, with results received and not taken
    assert len(received) == 4 and not set(received) & blocks()


def test_no_slots_where_shared_memory_is_short(caplog) -> None:
    with caplog.at_level(logging.WARNING), SlotRing(1, 1 << 50) as ring:  # a pebibyte: more than any /dev/shm
        assert ring.blocks == {} and ring.lend("x") is None
    assert "shared memory is short" in caplog.text


def test_a_result_handed_to_another_thread_keeps_its_slot_until_that_thread_is_done() -> None:
    """The Segmenter's hand-over: a consumer that returns a future (infer.py's scoring thread) gets
    the slot back only when the future completes; one that returns None, at once."""
    from concurrent.futures import Future

    from hpasc.segmentation.segmenter import _hand_over

    with SlotRing(2, 4096) as ring:
        job, later = Future(), Future()
        job.set_result("cells")
        ring.lend("a"), ring.lend("b")
        got, failures = [], {}
        _hand_over("a", job, lambda image_id, result: got.append((image_id, result)) or later, failures, ring)
        assert got == [("a", "cells")] and not ring.free  # the consumer still reads slot a
        later.set_result(None)
        assert len(ring.free) == 1
        _hand_over("b", job, lambda image_id, result: None, failures, ring)
        assert len(ring.free) == 2 and failures == {}
