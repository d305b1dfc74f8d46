"""The loaded ensemble: every member's model on a device, scoring batches of cell tiles."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hpasc.cells.provenance import Provenance, cells_alike
from hpasc.cells.tile_spec import TileSpec
from hpasc.core.classes import NEGATIVE, NUM_CLASSES
from hpasc.core.errors import InputError
from hpasc.models.precision import Precision
from hpasc.models.registry import architecture
from hpasc.models.runner import ModelRunner
from hpasc.models.scoring import prepare_batch, to_probabilities
from hpasc.models.spec import ModelSpec
from hpasc.stages.infer.ensemble_file import Ensemble

log = logging.getLogger(__name__)


class LoadedEnsemble:
    """The members' models on a device; ``__call__`` scores the tiles of a batch of cells.

    Each member is fed tiles cut the way its training tiles were (its checkpoint's tile spec, the
    heuristics' numbers included): ``tile_specs`` lists one :class:`TileSpec` per group of specs
    that accept each other's tiles, at the largest tile size of its members (a smaller member gets
    them resized on the device), and ``__call__`` takes the cells' tiles in each of them, in that
    order.
    """

    def __init__(self, ensemble: Ensemble, device: torch.device, precision: Precision = Precision(),
                 tta: bool = False) -> None:
        self.device, self.precision, self.tta = device, precision, tta
        self.checkpoints = [member.checkpoint for member in ensemble.members]
        self.models: list[tuple[nn.Module, ModelSpec, float, int]] = []
        self.embedding_widths: list[int] = []
        # Each member's last pooled feature vectors (its head's input), caught by a hook set before
        # any compilation, so a compiled member keeps it in its graph.
        self.pooled: dict[int, torch.Tensor] = {}
        specs: list[TileSpec] = []  # in first-seen order, each at the largest size of its members
        for index, member in enumerate(ensemble.members):
            runner = ModelRunner.load(member.checkpoint, device, precision)
            spec = runner.spec
            group = _group_of(specs, spec.tile_spec)
            head = architecture(spec.arch).head(runner.model)
            head.register_forward_hook(_keeper(self.pooled, index))
            self.models.append((runner.scoring, spec, member.weight, group))
            self.embedding_widths.append(head.in_features)
        self.tile_specs = tuple(specs)
        self.tile_size = max(s.size for s in specs)
        self.derive_negative = not any(spec.negative_head for _, spec, _, _ in self.models)

    def check_segmentation(self, used_on: Provenance, allow_other: bool) -> None:
        """Refuse masks made another way than a member's training cells were (its scores would be of
        cells unlike its own), in one line naming both; ``allow_other``: a warning instead."""
        for checkpoint, (_, spec, _, _) in zip(self.checkpoints, self.models):
            if spec.segmentation is None:
                continue
            trained_on = Provenance.from_dict(spec.segmentation)
            if cells_alike(trained_on, used_on):
                continue
            message = (f"{checkpoint} was trained on cells of {trained_on.describe()}, but this run segments "
                       f"with {used_on.describe()}")
            if not allow_other:
                raise InputError(f"{message}: segment as it was trained (--backend, HPA's weights), or pass "
                                 f"--allow-other-segmentation")
            log.warning("%s (--allow-other-segmentation)", message)

    def __call__(self, tiles: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """(B, 19) probabilities of B cells (``tiles``: their tiles per tile spec, or one batch when the
        ensemble has one): the weighted mean of the members' (with flips when ``tta``);
        without a Negative output anywhere, Negative = 1 − max of the ensemble's classes."""
        return self._score(tiles, None)

    def with_embeddings(self, tiles: torch.Tensor | Sequence[torch.Tensor]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The probabilities, and per member the cells' pooled feature vectors (B, width) as
        float16 (the mean over the flips when ``tta``)."""
        embeddings: list[torch.Tensor] = []
        probabilities = self._score(tiles, embeddings)
        return probabilities, [e.float().cpu().numpy().astype(np.float16) for e in embeddings]

    def _score(self, tiles: torch.Tensor | Sequence[torch.Tensor], embeddings: list[torch.Tensor] | None) -> np.ndarray:
        per_spec = [tiles] if isinstance(tiles, torch.Tensor) else list(tiles)
        if len(per_spec) != len(self.tile_specs):
            raise ValueError(f"{len(per_spec)} tile batches for {len(self.tile_specs)} tile specs")
        total = torch.zeros(len(per_spec[0]), NUM_CLASSES, device=self.device)
        with torch.inference_mode():
            for index, (model, spec, weight, group) in enumerate(self.models):
                batch = prepare_batch(per_spec[group], spec, self.device, self.precision)
                views = [batch, batch.flip(-1), batch.flip(-2)] if self.tta else [batch]
                pooled: list[torch.Tensor] = []
                for view in views:
                    with self.precision.autocast(self.device):
                        logits = model(view)
                    total += to_probabilities(logits, spec) * (weight / len(views))
                    vectors = self.pooled.pop(index)  # taken either way: no batch's tensors linger
                    if embeddings is not None:
                        pooled.append(vectors.float())
                if embeddings is not None:
                    embeddings.append(torch.stack(pooled).mean(dim=0))
        if self.derive_negative:
            total[:, NEGATIVE] = 1 - total[:, :NEGATIVE].amax(dim=1)
        return total.float().cpu().numpy()


def _keeper(pooled: dict[int, torch.Tensor], index: int):
    """A forward hook on member ``index``'s head that keeps its input in ``pooled``."""
    def keep(_head: nn.Module, inputs: tuple[torch.Tensor, ...], _logits: torch.Tensor) -> None:
        pooled[index] = inputs[0]
    return keep


def _group_of(specs: list[TileSpec], tiles: TileSpec) -> int:
    """The index of the spec of ``specs`` that accepts ``tiles`` (grown to their size), appended if
    there is none."""
    for index, spec in enumerate(specs):
        if spec.accepts(tiles):
            specs[index] = spec.resized(max(spec.size, tiles.size))
            return index
    specs.append(tiles)
    return len(specs) - 1
