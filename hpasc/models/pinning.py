"""Page-locked ("pinned") host memory for CUDA copies out of shared memory.

A copy to the GPU from ordinary (pageable) memory goes through a driver's staging buffer: a CPU
memcpy in the calling thread, ~4 ms per 2048² image's 40 MB of tiles in the one main process.
From page-locked memory the GPU's copy engine reads the bytes itself and the call returns at once.
The stages' shared-memory slots (:class:`hpasc.core.shared_arrays.SlotRing`) live for a whole run, so
they are registered with CUDA once, when created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)


def page_locker(device: torch.device) -> Callable[[memoryview], Callable[[], None]] | None:
    """On CUDA, a function that page-locks a block of host memory and returns its undoing; None
    elsewhere (nothing to gain)."""
    if device.type != "cuda":
        return None
    return _lock


def _lock(buffer: memoryview) -> Callable[[], None]:
    address, size = np.frombuffer(buffer, np.uint8).ctypes.data, len(buffer)
    runtime = torch.cuda.cudart()
    try:
        torch.cuda.check_error(runtime.cudaHostRegister(address, size, 0))
    except RuntimeError as exc:  # a driver that refuses: the copies stay correct, only slower
        log.debug("could not page-lock %d bytes of shared memory: %s", size, exc)
        return lambda: None
    return lambda: torch.cuda.check_error(runtime.cudaHostUnregister(address))
