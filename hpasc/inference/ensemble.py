"""The loaded ensemble: every member's model on a device, scoring batches of cell tiles."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hpasc.classes import NEGATIVE, NUM_CLASSES
from hpasc.inference.ensemble_file import Ensemble
from hpasc.models.checkpoint import build_model, load_checkpoint
from hpasc.models.precision import Precision
from hpasc.models.scoring import prepare_batch, to_probabilities
from hpasc.models.spec import ModelSpec


class LoadedEnsemble:
    """The members' models on a device; ``__call__`` scores a batch of uint16 tiles."""

    def __init__(self, ensemble: Ensemble, device: torch.device, precision: Precision = Precision(),
                 tta: bool = False) -> None:
        self.device, self.precision, self.tta = device, precision, tta
        self.models: list[tuple[nn.Module, ModelSpec, float]] = []
        for member in ensemble.members:
            model, spec = build_model(load_checkpoint(member.checkpoint), device, precision)
            self.models.append((model, spec, member.weight))
        self.tile_size = max(spec.tile_size for _, spec, _ in self.models)
        self.derive_negative = not any(spec.negative_head for _, spec, _ in self.models)

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        """(B, 19) probabilities: the weighted mean of the members' (with flips when ``tta``);
        without a Negative output anywhere, Negative = 1 − max of the ensemble's classes."""
        total = torch.zeros(len(tiles), NUM_CLASSES, device=self.device)
        with torch.inference_mode():
            for model, spec, weight in self.models:
                batch = prepare_batch(tiles, spec, self.device, self.precision)
                views = [batch, batch.flip(-1), batch.flip(-2)] if self.tta else [batch]
                for view in views:
                    with self.precision.autocast(self.device):
                        logits = model(view)
                    total += to_probabilities(logits, spec) * (weight / len(views))
        if self.derive_negative:
            total[:, NEGATIVE] = 1 - total[:, :NEGATIVE].amax(dim=1)
        return total.float().cpu().numpy()
