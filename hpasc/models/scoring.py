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

from hpasc.classes import NEGATIVE, NUM_CLASSES
from hpasc.models.spec import ModelSpec


def prepare_batch(tiles: Tensor, spec: ModelSpec, device: str | torch.device) -> Tensor:
    """(B, C, S, S) integer tiles → float32 model input on ``device``: scaled by ``spec.scale`` and
    resized (antialiased bilinear) to ``spec.tile_size``; channels-last on CUDA."""
    if tiles.dim() != 4 or tiles.shape[1] != spec.in_channels:
        raise ValueError(f"expected (B, {spec.in_channels}, S, S) tiles, got {tuple(tiles.shape)}")
    # Copy the integers, half or a quarter the bytes of floats, and convert on the device.
    batch = tiles.to(device, non_blocking=True).to(torch.float32) * spec.scale
    if tuple(batch.shape[-2:]) != (spec.tile_size, spec.tile_size):
        batch = F.interpolate(batch, size=(spec.tile_size, spec.tile_size), mode="bilinear",
                              align_corners=False, antialias=True)
    if batch.device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def to_probabilities(logits: Tensor, spec: ModelSpec) -> Tensor:
    """(B, outputs) logits → (B, 19) float32 probabilities in class order."""
    probabilities = torch.zeros(logits.shape[0], NUM_CLASSES, dtype=torch.float32, device=logits.device)
    probabilities[:, list(spec.outputs)] = torch.sigmoid(logits.float())
    if not spec.negative_head:
        probabilities[:, NEGATIVE] = 1 - probabilities[:, :NEGATIVE].amax(dim=1)
    return probabilities


def score_tiles(model: nn.Module, spec: ModelSpec, tiles_iterable: Iterable[Tensor],
                device: str | torch.device, mixed_precision: bool = True) -> np.ndarray:
    """The (N, 19) float32 probabilities of every tile in the batches of ``tiles_iterable``.

    The model runs in eval mode (its previous mode is restored afterwards), under float16
    autocast on CUDA when ``mixed_precision``.
    """
    device_type = torch.device(device).type
    autocast = device_type == "cuda" and mixed_precision
    was_training = model.training
    model.eval()
    scores = [np.zeros((0, NUM_CLASSES), dtype=np.float32)]
    try:
        with torch.inference_mode():
            for tiles in tiles_iterable:
                batch = prepare_batch(tiles, spec, device)
                with torch.autocast(device_type=device_type, dtype=torch.float16, enabled=autocast):
                    logits = model(batch)
                scores.append(to_probabilities(logits, spec).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(scores)
