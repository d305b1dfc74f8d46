"""Process pools for the CPU-bound stages.

Spawned, not forked: a parent that holds CUDA state or threads (OpenCV's, torch's) cannot be
forked safely. While a pool runs, its workers and the main process share the cores by
:mod:`hpasc.core.threads`' rule: each worker sizes torch, OpenCV and Blosc (the cell store's
compression) to its share (all the cores for one worker, one each when there are as many workers
as cores) and the main process keeps what the workers leave.
A worker that dies (e.g. killed for memory) breaks the pool, which cli.run reports in one line.

Stopping: Ctrl-C reaches the main process only (workers start with SIGINT blocked), which
cancels the jobs not started and lets the running ones finish (one item each); a worker whose
parent is gone (kill -9) is killed by the kernel (Linux, :mod:`hpasc.core.parent`), else exits
within :data:`PARENT_POLL_S`. Every output is written
atomically, so a job cut short leaves at most a temporary file, which the stage removes on its
next start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import TypeVar

from hpasc.core import runtime, threads
from hpasc.core.parent import tie_to_parent
from hpasc.core.shared_arrays import release_unclaimed

T = TypeVar("T")
PARENT_POLL_S = 0.5


class _Pool(ProcessPoolExecutor):
    """A spawn pool whose workers ignore Ctrl-C, die with their parent and do not run the entry
    point again."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        # The pool spawns its workers inside submit. A signal blocked here stays blocked in them
        # (the mask survives fork and exec), so a terminal's ^C, sent to the whole process group,
        # interrupts only this process; a pending one is delivered when the mask is restored.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with _main_left_out():
                return super().submit(fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop_now(self) -> None:
        """Cancel the jobs not started and wait for the running ones: one item each, seconds.

        Not terminated: a worker killed mid-job leaves the semaphores its libraries made
        (numcodecs') registered, and the resource tracker warns about them at exit."""
        self.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def process_pool(workers: int, setup: Callable[[], object] | None = None) -> Iterator[ProcessPoolExecutor]:
    """A spawn pool for the block; an exception (^C included) leaving the block stops it at once.
    ``setup`` (picklable) runs once in each worker as it starts: what every job of the pool reads."""
    pool = _Pool(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                 initargs=(os.getpid(), threads.helper_share(workers), setup))
    with threads.shared_with(workers):
        try:
            yield pool
        except BaseException:
            pool.stop_now()
            raise
        finally:  # results handed over in shared memory that no one took (a stage stopped early)
            release_unclaimed()
        pool.shutdown()


@contextlib.contextmanager
def _main_left_out() -> Iterator[None]:
    """While workers spawn, a ``__main__`` with neither a file nor a module name: a spawned worker
    would otherwise run the entry point again as ``__mp_main__``, and train_me.py's imports torch
    (3 s and 700 MB per worker, for nothing: every job is a function of hpasc's own modules)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _init_worker(parent: int, share: int, setup: Callable[[], object] | None) -> None:
    tie_to_parent(parent)  # first: before anything that could take long
    threads.limit_threads(share)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()
    if setup is not None:
        setup()


def _exit_with_parent(parent: int) -> None:
    # A parent killed with -9 runs no clean-up: its workers would go on writing outputs.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def collect_failures(futures: dict[Future, str], options: runtime.CommonOptions,
                     unit: str = "image") -> dict[str, str]:
    """Wait for every job (item id per future) with a progress bar; item id → failure reason."""
    failures = {}
    for future in options.bar(as_completed(futures), total=len(futures), unit=unit):
        reason = failure_reason(future)
        if reason is not None:
            failures[futures[future]] = reason
    return failures


def failure_reason(future: Future) -> str | None:
    """None for a job that succeeded (waiting for it), else a one-line reason."""
    error = future.exception()
    return None if error is None else runtime.describe_failure(error)


def bounded_map(submit: Callable[[T], Future], items: Iterable[T], window: int) -> Iterator[tuple[T, Future]]:
    """Submit ``submit(item)`` for each item, at most ``window`` jobs ahead of the consumer, and
    yield each item with its finished future in the items' order: workers stay busy while the
    results' memory stays bounded."""
    pending: deque[tuple[T, Future]] = deque()
    waiting = iter(items)
    for item in waiting:
        pending.append((item, submit(item)))
        if len(pending) >= window:
            break
    while pending:
        item, future = pending.popleft()
        future.exception()  # waits for the job
        yield item, future
        following = next(waiting, _END)
        if following is not _END:
            pending.append((following, submit(following)))


_END = object()
