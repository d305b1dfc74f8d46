"""How every network runs on CUDA: the autocast dtype, the memory layout and torch.compile, one
rule for all.

float16 autocast needs a GradScaler when training (its small gradients underflow); bfloat16 has
float32's range and needs none. On the CPU everything runs in float32 with the default layout,
eagerly: CPU autocast would be slower and change the results, and compiling would change them in
the last bits (the CPU's runs are the exact ones: same seed, same checkpoint).

torch.compile turns a B0 training step from 834 into 1,302 images/s on an H200 (bench/RESULTS.md),
but a first compile takes about two minutes: its kernels are kept in the hpasc cache
(``~/.cache/hpasc/torch-compile``) instead of torch's ``/tmp`` folder, so a later run, or a
resumed one, compiles from there in seconds.

torch is imported when a precision is applied, not with this module: the entry points that parse
``--precision`` are re-imported by their spawned workers, which never run a network.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Precision:
    """``dtype``: the autocast dtype on CUDA (``float32``: no autocast); ``channels_last``: the
    models and their inputs in channels-last memory on CUDA (faster convolutions on tensor cores);
    ``compile``: the models that train and score cells torch.compile'd on CUDA (:meth:`compiled`)."""

    dtype: str = "float16"
    channels_last: bool = True
    compile: bool = True

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

    def compiled(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """``model`` as it runs on ``device``: torch.compile'd on CUDA when ``compile`` (sharing its
        parameters: save and load ``model`` itself), else ``model``. Compilation happens on the first
        call, and again for another batch size (then with the batch size left dynamic)."""
        import torch

        if torch.device(device).type != "cuda" or not self.compile:
            return model
        from hpasc.core.weights_cache import default_cache_dir  # its HTTP imports: only where it compiles

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir("torch-compile")))
        return torch.compile(model)
