"""A trained model at work: one checkpoint's model on a device, in a precision, fed its own kind of
tiles and scored into the 19 class probabilities. Inference (each member of an ensemble),
fine-tuning, pseudo-labels, cell-level evaluation, Grad-CAM and the label tool all load and run a
checkpoint through :class:`ModelRunner`, so none of them decides again how (nnU-Net's rule: the
model's folder carries its plans).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from hpasc.cells.tile_spec import TileSpec
from hpasc.core.errors import InputError
from hpasc.models.checkpoint import build_model, load_checkpoint
from hpasc.models.precision import Precision
from hpasc.models.scoring import score_tiles
from hpasc.models.spec import ModelSpec

log = logging.getLogger(__name__)


class TileSource(Protocol):
    """What a tile check needs of a cell store."""

    root: Path
    tile_size: int
    tile_spec: TileSpec


class ModelRunner:
    """``model`` (built from ``spec``) on ``device`` under ``precision``; ``checkpoint`` is the file's
    content when it was loaded from one (epoch, metrics, the run's arguments)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, device: str | torch.device,
                 precision: Precision = Precision(), checkpoint: dict[str, Any] | None = None) -> None:
        self.model, self.spec, self.precision = model, spec, precision
        self.device = torch.device(device)
        self.checkpoint = checkpoint or {}

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             precision: Precision = Precision()) -> ModelRunner:
        """The checkpoint at ``path`` rebuilt on ``device`` (one-line InputError for a bad file)."""
        checkpoint = load_checkpoint(path)
        try:
            model, spec = build_model(checkpoint, device, precision)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        return cls(model, spec, device, precision, checkpoint)

    def check_tiles(self, store: TileSource) -> None:
        """Refuse a store whose tiles are cut another way than the model's training tiles were (its
        scores would mean nothing); warn when its tiles are smaller than the model's input."""
        check_tiles_for(store, self.spec)

    @functools.cached_property
    def scoring(self) -> nn.Module:
        """The model as it scores: compiled on CUDA unless the precision says not (on first use, so
        a runner that only explains or fine-tunes compiles nothing)."""
        return self.precision.compiled(self.model, self.device)

    def score(self, batches: Iterable[Tensor]) -> np.ndarray:
        """The (N, 19) probabilities of every tile of ``batches``, in eval mode and without gradients."""
        return score_tiles(self.scoring, self.spec, batches, self.device, self.precision)


def check_tiles_for(store: TileSource, spec: ModelSpec) -> None:
    """:meth:`ModelRunner.check_tiles` for a model known by its spec alone (training, before the
    model exists)."""
    mismatch = spec.tile_spec.mismatch(store.tile_spec)
    if mismatch:
        raise InputError(f"{store.root}: its tiles are not cut the way the model's training tiles were "
                         f"({mismatch}): cut the images again with hpasc-cut --mode/--context/--zero/--margin")
    warn_enlarging(store.tile_size, spec.tile_size, store.root)


@functools.lru_cache(maxsize=None)
def warn_enlarging(stored: int, wanted: int, where: Path) -> None:
    """One warning per (store, size) when a model needs larger tiles than the store holds."""
    if wanted > stored:
        log.warning("%s holds %d px tiles, the model takes %d px: they are enlarged (blurred)", where, stored,
                    wanted)
