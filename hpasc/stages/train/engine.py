"""A model on its device with what updates it: one training pass over a loader (batch
augmentation on the device, mixed precision and channels-last on CUDA, DDP when distributed) and
an evaluation pass. train_me.py and finetuner.py differ only in how they build it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hpasc.core.runtime import CommonOptions
from hpasc.models.precision import Precision
from hpasc.models.scoring import prepare_batch, to_probabilities
from hpasc.models.spec import ModelSpec
from hpasc.stages.train.augment import AugmentSettings, augment_batch
from hpasc.stages.train.distributed import Process
from hpasc.stages.train.losses import create_loss

log = logging.getLogger(__name__)

TileBatches = Iterable[tuple[torch.Tensor, torch.Tensor]]
"""(tiles, indices) batches: a pass of a :class:`~hpasc.stages.train.data.TileReader`."""


@dataclass
class Engine:
    model: nn.Module
    """The model as trained: wrapped in DistributedDataParallel when distributed."""
    spec: ModelSpec
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss: str
    augment: AugmentSettings
    process: Process
    precision: Precision = Precision()

    def __post_init__(self) -> None:
        self.loss_fn = create_loss(self.loss)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.needs_scaler(self.device))
        # What steps and evaluates: compiled on CUDA unless --no-compile, sharing model's parameters
        # (model itself is what checkpoints save).
        self.running = self.precision.compiled(self.model, self.device)
        self.evaluating = self.running if self.inner is self.model else self.precision.compiled(self.inner, self.device)

    @property
    def device(self) -> torch.device:
        return self.process.device

    @property
    def inner(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _inputs(self, tiles: torch.Tensor) -> torch.Tensor:
        return prepare_batch(tiles, self.spec, self.device, self.precision)

    def _forward(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast(self.device):
            return model(batch)

    def train_epoch(self, loader: TileBatches, targets: torch.Tensor, generator: torch.Generator,
                    options: CommonOptions, description: str) -> float:
        """One pass over ``loader``'s batches; the mean training loss per cell."""
        self.model.train()
        targets = targets.to(self.device)  # resident for the pass: no copy, and no wait, per step
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        cells = 0
        batches = options.bar(loader, desc=description, unit="batch", leave=False) \
            if self.process.is_main else loader
        for step, (tiles, indices) in enumerate(batches):
            loss = self.train_step(tiles, self.targets_of(targets, indices), generator)
            total += loss.detach() * len(indices)
            cells += len(indices)
            if self.process.is_main and step % 20 == 0 and hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{total.item() / cells:.4f}")
        return total.item() / max(cells, 1)

    def targets_of(self, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The batch's rows of ``targets`` (on the device): the indices cross from page-locked
        memory, which does not wait for the work queued before them as a pageable copy does."""
        if self.device.type == "cuda":
            indices = indices.pin_memory().to(self.device, non_blocking=True)
        return targets[indices]

    def train_step(self, tiles: torch.Tensor, batch_targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment one batch of tiles, step the model on it; its mean loss (on the device)."""
        batch = augment_batch(self._inputs(tiles), self.augment, generator)
        batch = batch.contiguous(memory_format=self.precision.memory_format(self.device))
        loss = self.loss_fn(self._forward(self.running, batch), batch_targets).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def validation_pass(self, loader: TileBatches, targets: torch.Tensor, options: CommonOptions | None = None,
                 description: str = "validation") -> tuple[float, np.ndarray]:
        """Mean loss per cell over ``loader`` and the (N, 19) probabilities, in loader order (with a
        progress bar when ``options`` are given)."""
        self.inner.eval()
        total, cells, scores = 0.0, 0, []
        batches = loader if options is None else options.bar(loader, desc=description, unit="batch", leave=False)
        targets = targets.to(self.device)
        with torch.inference_mode():
            for tiles, indices in batches:
                logits = self._forward(self.evaluating, self._inputs(tiles))
                total += float(self.loss_fn(logits, self.targets_of(targets, indices)).sum())
                cells += len(indices)
                scores.append(to_probabilities(logits, self.spec).cpu().numpy())
        return total / max(cells, 1), np.concatenate(scores)

    def training_state(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


def place_model(model: nn.Module, process: Process, precision: Precision) -> nn.Module:
    """``model`` on the process's device in ``precision``'s layout, DDP-wrapped when distributed."""
    model = model.to(process.device, memory_format=precision.memory_format(process.device))
    if process.distributed:
        device_ids = [process.device.index] if process.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    return model


def adam(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam for ``model``: on CUDA its fused kernels, one launch per step, which also take
    GradScaler's overflow check on the device instead of a wait for it; on the CPU the default."""
    if device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    return torch.optim.Adam(model.parameters(), lr=lr)
