"""How the cores this process may use (its CPU affinity, which batch schedulers and ``taskset``
set, not the machine's count) are shared between its thread pools and its helper processes.

The rule, in every stage: a process that starts ``n`` busy helper processes (a worker pool, the
tile reader's workers) keeps ``cores - n`` threads for itself (at least one), and each helper gets
``cores // n``. Every pool that would otherwise size itself by the machine follows it: torch's
intra-op threads (OpenMP), OpenCV's and Blosc's.

Beside other work the fair share is smaller than the affinity, and OpenMP's threads, which by
default spin at every barrier waiting for a thread that another process displaced, burned the
cores they waited for: training ran 5-8 s a batch instead of 0.65. Importing this module (the
command layer does, before torch loads) makes them sleep instead (``OMP_WAIT_POLICY=PASSIVE``)
unless the environment already chose: on a 2-core machine beside two busy processes a CPU
training run took 30 s instead of 69 s, and 19.5 s instead of 17.7 s on a quiet machine
(``OMP_WAIT_POLICY=ACTIVE`` gives those back on a machine that is yours alone).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import cv2

from hpasc.core.runtime import usable_cores

# Read by OpenMP once, when torch loads; the processes this one starts inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def share_cores(helpers: int) -> int:
    """Limit this process's thread pools to the cores ``helpers`` busy helper processes leave
    (at least one); returns that count."""
    threads = max(1, usable_cores() - helpers)
    limit_threads(threads)
    return threads


def helper_share(helpers: int) -> int:
    """The threads each of ``helpers`` helper processes may run (at least one)."""
    return max(1, usable_cores() // max(1, helpers))


def limit_threads(threads: int) -> None:
    """Size torch's, OpenCV's and Blosc's thread pools in this process to ``threads``."""
    # The variables reach libraries not loaded yet (torch reads OMP_NUM_THREADS when it loads;
    # c-blosc reads BLOSC_NTHREADS at every call) and the processes this one starts.
    os.environ["OMP_NUM_THREADS"] = os.environ["BLOSC_NTHREADS"] = str(threads)
    cv2.setNumThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    blosc = sys.modules.get("numcodecs.blosc")
    if blosc is not None:  # sized at import by the machine's count, not the affinity
        blosc.set_nthreads(threads)


@contextlib.contextmanager
def shared_with(helpers: int) -> Iterator[int]:
    """:func:`share_cores` for the block; the whole share comes back when it ends."""
    threads = share_cores(helpers)
    try:
        yield threads
    finally:
        share_cores(0)
