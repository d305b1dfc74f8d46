"""Process pools for the CPU-bound stages.

Spawned, not forked: a parent that holds CUDA state or threads (OpenCV's, torch's) cannot be
forked safely. Each worker runs OpenCV single-threaded, because the pool provides the parallelism.
A worker that dies (e.g. killed for memory) breaks the pool, which cli.run reports in one line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import TypeVar

import cv2

from hpasc import runtime

T = TypeVar("T")


def process_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)


def _init_worker() -> None:
    cv2.setNumThreads(1)


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
