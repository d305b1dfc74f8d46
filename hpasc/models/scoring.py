"""Turning uint16 cell tiles into the 19 class probabilities, the same way everywhere.

Validation, pseudo-labelling and inference all score tiles with these functions, so a model sees
its input scaled and sized exactly as in training, and its outputs become probabilities in one
place: a model without a Negative output gets Negative = 1 − its most confident class (the 4th
place's rule).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpasc.core.classes import NEGATIVE, NUM_CLASSES
from hpasc.models.precision import Precision
from hpasc.models.spec import ModelSpec


def prepare_batch(tiles: Tensor, spec: ModelSpec, device: str | torch.device,
                  precision: Precision = Precision()) -> Tensor:
    """(B, C, S, S) integer tiles → float32 model input on ``device``: scaled by ``spec.scale`` and
    resized (antialiased bilinear) to ``spec.tile_size``, in ``precision``'s memory layout."""
    if tiles.dim() != 4 or tiles.shape[1] != spec.in_channels:
        raise ValueError(f"expected (B, {spec.in_channels}, S, S) tiles, got {tuple(tiles.shape)}")
    # Copy the integers, half or a quarter the bytes of floats, and convert on the device.
    batch = tiles.to(device, non_blocking=True).to(torch.float32) * spec.scale
    if tuple(batch.shape[-2:]) != (spec.tile_size, spec.tile_size):
        batch = F.interpolate(batch, size=(spec.tile_size, spec.tile_size), mode="bilinear",
                              align_corners=False, antialias=True)
    return batch.contiguous(memory_format=precision.memory_format(batch.device))


def to_probabilities(logits: Tensor, spec: ModelSpec) -> Tensor:
    """(B, outputs) logits → (B, 19) float32 probabilities in class order."""
    probabilities = torch.zeros(logits.shape[0], NUM_CLASSES, dtype=torch.float32, device=logits.device)
    probabilities[:, list(spec.outputs)] = torch.sigmoid(logits.float())
    if not spec.negative_head:
        probabilities[:, NEGATIVE] = 1 - probabilities[:, :NEGATIVE].amax(dim=1)
    return probabilities


def score_tiles(model: nn.Module, spec: ModelSpec, tiles_iterable: Iterable[Tensor],
                device: str | torch.device, precision: Precision = Precision()) -> np.ndarray:
    """The (N, 19) float32 probabilities of every tile in the batches of ``tiles_iterable``.

    The model runs in eval mode (its previous mode is restored afterwards), under ``precision``
    (autocast and memory layout apply on CUDA only).
    """
    was_training = model.training
    model.eval()
    scores = [np.zeros((0, NUM_CLASSES), dtype=np.float32)]
    try:
        with torch.inference_mode():
            for tiles in tiles_iterable:
                batch = prepare_batch(tiles, spec, device, precision)
                with precision.autocast(device):
                    logits = model(batch)
                scores.append(to_probabilities(logits, spec).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(scores)
