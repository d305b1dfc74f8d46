"""Process pools for the CPU-bound stages.

Spawned, not forked: a parent that holds CUDA state or threads (OpenCV's, torch's) cannot be
forked safely. Each worker runs OpenCV single-threaded, because the pool provides the parallelism.
A worker that dies (e.g. killed for memory) breaks the pool, which cli.run reports in one line.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import cv2

from hpasc import cli


def process_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def collect_failures(futures: dict[Future, str], options: cli.CommonOptions,
                     unit: str = "image") -> dict[str, str]:
    """Wait for every job (item id per future) with a progress bar; item id → failure reason."""
    failures = {}
    for future in options.bar(as_completed(futures), total=len(futures), unit=unit):
        error = future.exception()
        if error is not None:
            failures[futures[future]] = cli.describe_failure(error)
    return failures
