"""The ensemble description (SPEC: groups with a weight, each a list of checkpoints with weights,
plus the post-processing settings) and the loaded ensemble that scores cell tiles.

File (YAML or JSON; checkpoint paths relative to the file's folder)::

    groups:
      - weight: 0.2
        members:
          - {checkpoint: finetuned/b0-bce-12.pt, weight: 1.0}
      - weight: 0.4
        members: [{checkpoint: finetuned/b0-focal-12.pt}]
    postprocessing: {cell_weight: 0.7, image_weight: 0.3, border_factor: true, outlier_factor: true}

Group weights are normalised over the groups, member weights within their group; a member's
effective weight is the product. A single checkpoint file may stand in for a one-member ensemble.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from hpasc.classes import NEGATIVE, NUM_CLASSES
from hpasc.errors import InputError
from hpasc.models.checkpoint import build_model, load_checkpoint
from hpasc.models.spec import ModelSpec
from hpasc.models.scoring import prepare_batch, to_probabilities


@dataclass(frozen=True)
class PostprocessSettings:
    """The 4th place's cell/image weighting and cell factors (see :mod:`hpasc.inference.postprocess`)."""

    cell_weight: float = 0.7
    image_weight: float = 0.3
    border_factor: bool = True
    outlier_factor: bool = True


@dataclass(frozen=True)
class Member:
    checkpoint: Path
    weight: float


@dataclass(frozen=True)
class Ensemble:
    members: tuple[Member, ...]
    """Every checkpoint with its effective (normalised) weight; the weights sum to 1."""
    postprocessing: PostprocessSettings


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"{where}: weight must be a number >= 0, got {value!r}")
    return float(value)


def _normalised(weights: Sequence[float], where: str) -> list[float]:
    total = sum(weights)
    if total <= 0:
        raise InputError(f"{where}: the weights sum to 0")
    return [w / total for w in weights]


def _members(groups: object, folder: Path, source: Path) -> tuple[Member, ...]:
    if not isinstance(groups, list) or not groups:
        raise InputError(f"{source}: 'groups' must be a non-empty list")
    weights, lists = [], []
    for g, group in enumerate(groups):
        where = f"{source}: group {g + 1}"
        if not isinstance(group, dict) or not isinstance(group.get("members"), list) or not group["members"]:
            raise InputError(f"{where}: needs a non-empty 'members' list")
        weights.append(_number(group.get("weight", 1.0), where))
        entries = []
        for m, member in enumerate(group["members"]):
            if isinstance(member, str):
                member = {"checkpoint": member}
            if not isinstance(member, dict) or "checkpoint" not in member:
                raise InputError(f"{where}, member {m + 1}: needs a 'checkpoint'")
            path = Path(member["checkpoint"])
            entries.append((path if path.is_absolute() else folder / path,
                            _number(member.get("weight", 1.0), f"{where}, member {m + 1}")))
        lists.append(entries)
    result = []
    for group_weight, entries in zip(_normalised(weights, f"{source}: groups"), lists):
        inner = _normalised([w for _, w in entries], f"{source}: a group's members")
        result.extend(Member(path, group_weight * w) for (path, _), w in zip(entries, inner))
    return tuple(m for m in result if m.weight > 0)


def _postprocessing(values: object, source: Path) -> PostprocessSettings:
    if values is None:
        return PostprocessSettings()
    known = set(PostprocessSettings.__dataclass_fields__)
    if not isinstance(values, dict) or set(values) - known:
        raise InputError(f"{source}: 'postprocessing' takes {', '.join(sorted(known))}")
    return PostprocessSettings(**values)


def read_ensemble(path: str | Path) -> Ensemble:
    """Read an ensemble file, or wrap a single ``.pt`` checkpoint; InputError on bad content."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ensemble file does not exist")
    if path.suffix == ".pt":
        return Ensemble((Member(path, 1.0),), PostprocessSettings())
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not a readable ensemble file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or set(data) - {"groups", "postprocessing"}:
        raise InputError(f"{path}: an ensemble file has 'groups' and optionally 'postprocessing'")
    members = _members(data.get("groups"), path.parent, path)
    missing = [str(m.checkpoint) for m in members if not m.checkpoint.is_file()]
    if missing:
        raise InputError(f"{path}: checkpoint(s) not found: {', '.join(missing)}")
    return Ensemble(members, _postprocessing(data.get("postprocessing"), path))


class LoadedEnsemble:
    """The members' models on a device; ``__call__`` scores a batch of uint16 tiles."""

    def __init__(self, ensemble: Ensemble, device: torch.device, mixed_precision: bool = True,
                 tta: bool = False) -> None:
        self.device = device
        self.autocast = device.type == "cuda" and mixed_precision
        self.tta = tta
        self.models: list[tuple[nn.Module, ModelSpec, float]] = []
        for member in ensemble.members:
            model, spec = build_model(load_checkpoint(member.checkpoint), device)
            self.models.append((model, spec, member.weight))
        self.tile_size = max(spec.tile_size for _, spec, _ in self.models)
        self.derive_negative = not any(spec.negative_head for _, spec, _ in self.models)

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        """(B, 19) probabilities: the weighted mean of the members' (with flips when ``tta``);
        without a Negative output anywhere, Negative = 1 − max of the ensemble's classes."""
        total = torch.zeros(len(tiles), NUM_CLASSES, device=self.device)
        with torch.inference_mode():
            for model, spec, weight in self.models:
                batch = prepare_batch(tiles, spec, self.device)
                views = [batch, batch.flip(-1), batch.flip(-2)] if self.tta else [batch]
                for view in views:
                    with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
                        logits = model(view)
                    total += to_probabilities(logits, spec) * (weight / len(views))
        if self.derive_negative:
            total[:, NEGATIVE] = 1 - total[:, :NEGATIVE].amax(dim=1)
        return total.float().cpu().numpy()
