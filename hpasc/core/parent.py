"""A pool worker's tie to its parent, made as the worker starts (standard library only).

The pool's initializer (:func:`hpasc.core.workers.process_pool`) runs in each spawned worker before
any job, and with it the worker asks the kernel to kill it when its parent ends: a parent killed
with -9 runs no clean-up, and its workers would go on writing outputs. The kernel ties a worker to
the thread that started it: every pool here is made and fed from the main thread (a pool fed from
a thread that ends first would lose its workers). Nothing here runs on import: ``import hpasc``
has no side effect.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def tie_to_parent(parent: int) -> None:
    """In a worker of ``parent``'s pool: die (SIGKILL) when the parent ends. Linux only; elsewhere
    the pool's initializer watches the parent instead."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the tie held
        os._exit(1)
