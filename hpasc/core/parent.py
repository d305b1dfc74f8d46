"""A pool worker's tie to its parent from its very first import (standard library only, so that
it costs nothing before it holds).

A spawned worker imports its parent's main module and the job's modules (OpenCV, SciPy, ...)
before the pool's initializer runs, 1-3 s on a loaded machine: a parent killed then left its
workers running that long. :data:`PARENT_VARIABLE` names the parent in the worker's environment;
``import hpasc`` (the first thing a worker imports) then asks the kernel to kill the worker when
its parent ends. The kernel ties a worker to the thread that started it: every pool here is made
and fed from the main thread (a pool fed from a thread that ends first would lose its workers).
"""

from __future__ import annotations

import ctypes
import os
import signal

PARENT_VARIABLE = "HPASC_POOL_PARENT"
_PR_SET_PDEATHSIG = 1


def tie_to_parent() -> None:
    """In a worker that the pool of its parent started: die (SIGKILL) when the parent ends.
    Linux only; elsewhere the pool's initializer watches the parent instead."""
    if os.environ.get(PARENT_VARIABLE) != str(os.getppid()):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.environ[PARENT_VARIABLE] != str(os.getppid()):  # the parent ended before the tie held
        os._exit(1)
