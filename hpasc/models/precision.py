"""How every network runs on CUDA: the autocast dtype and the memory layout, one rule for all.

float16 autocast needs a GradScaler when training (its small gradients underflow); bfloat16 has
float32's range and needs none. On the CPU everything runs in float32 with the default layout:
CPU autocast would be slower and change the results.

torch is imported when a precision is applied, not with this module: the entry points that parse
``--precision`` are re-imported by their spawned workers, which never run a network.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Precision:
    """``dtype``: the autocast dtype on CUDA (``float32``: no autocast); ``channels_last``: the
    models and their inputs in channels-last memory on CUDA (faster convolutions on tensor cores)."""

    dtype: str = "float16"
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        import torch

        device = torch.device(device)
        if device.type != "cuda" or self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, self.dtype))

    def needs_scaler(self, device: torch.device | str) -> bool:
        import torch

        return torch.device(device).type == "cuda" and self.dtype == "float16"

    def memory_format(self, device: torch.device | str) -> torch.memory_format:
        import torch

        cuda = torch.device(device).type == "cuda"
        return torch.channels_last if cuda and self.channels_last else torch.contiguous_format
