"""The ensemble file (SPEC: groups with a weight, each a list of checkpoints with weights, plus the
post-processing settings): its one reader and its one writer. No torch here, so that the Kaggle
bundle and ``--help`` stay light.

File (YAML or JSON; checkpoint paths relative to the file's folder)::

    groups:
      - weight: 0.2
        members:
          - {checkpoint: finetuned/b0-bce-12.pt, weight: 1.0}
      - weight: 0.4
        members: [{checkpoint: finetuned/b0-focal-12.pt}]
    postprocessing: {cell_weight: 0.7, image_weight: 0.3, border_factor: true, outlier_factor: true}

Group weights are normalised over the groups, member weights within their group; a member's
effective weight is the product. A member may be given as a bare path. A single checkpoint file
may stand in for a one-member ensemble.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import yaml

from hpasc.core import atomic
from hpasc.core.errors import InputError


@dataclass(frozen=True)
class WeightingSettings:
    """The 4th place's cell/image weighting and cell factors (see :mod:`hpasc.stages.infer.weighting`)."""

    cell_weight: float = 0.7
    image_weight: float = 0.3
    border_factor: bool = True
    outlier_factor: bool = True


@dataclass(frozen=True)
class Member:
    checkpoint: Path
    weight: float


@dataclass(frozen=True)
class Group:
    weight: float
    members: tuple[Member, ...]


@dataclass(frozen=True)
class Ensemble:
    groups: tuple[Group, ...]
    postprocessing: WeightingSettings = WeightingSettings()

    @property
    def members(self) -> tuple[Member, ...]:
        """Every checkpoint with its effective (normalised) weight; the weights sum to 1."""
        result = []
        for group_weight, group in zip(_normalised([g.weight for g in self.groups], "groups"), self.groups):
            inner = _normalised([m.weight for m in group.members], "a group's members")
            result.extend(Member(m.checkpoint, group_weight * w) for m, w in zip(group.members, inner))
        return tuple(m for m in result if m.weight > 0)

    @property
    def checkpoints(self) -> list[Path]:
        """Each distinct checkpoint once, in the file's order."""
        return list(dict.fromkeys(m.checkpoint for g in self.groups for m in g.members))

    def moved(self, places: Mapping[Path, Path]) -> Ensemble:
        """The same ensemble with each checkpoint at its new place in ``places``."""
        groups = tuple(Group(g.weight, tuple(Member(places[m.checkpoint], m.weight) for m in g.members))
                       for g in self.groups)
        return dataclasses.replace(self, groups=groups)


def _number(value: object, where: str, name: str = "weight") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_keys(entry: dict, known: Sequence[str], where: str) -> None:
    """A key outside ``known`` (a typo such as ``wieght``) is an error, not a silently kept default."""
    for key in entry:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise InputError(f"{where}: unknown key {key!r}{hint}")


def _check_sum(weights: Sequence[float], where: str) -> None:
    total = sum(weights)
    if total <= 0:
        raise InputError(f"{where}: the weights sum to 0")
    if not math.isfinite(total):  # 1e308 + 1e308: every normalised weight would become 0
        raise InputError(f"{where}: the weights sum to more than a float holds; scale them down")


def _normalised(weights: Sequence[float], where: str) -> list[float]:
    _check_sum(weights, where)
    total = sum(weights)
    return [w / total for w in weights]


def _member(entry: object, folder: Path, where: str) -> Member:
    if isinstance(entry, str):
        entry = {"checkpoint": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("checkpoint"), str):
        raise InputError(f"{where}: needs a 'checkpoint' path")
    _check_keys(entry, ("checkpoint", "weight"), where)
    return Member(Path(os.path.abspath(folder / entry["checkpoint"])), _number(entry.get("weight", 1.0), where))


def _groups(groups: object, folder: Path, source: Path) -> tuple[Group, ...]:
    if not isinstance(groups, list) or not groups:
        raise InputError(f"{source}: 'groups' must be a non-empty list")
    result = []
    for g, group in enumerate(groups):
        where = f"{source}: group {g + 1}"
        if not isinstance(group, dict) or not isinstance(group.get("members"), list) or not group["members"]:
            raise InputError(f"{where}: needs a non-empty 'members' list")
        _check_keys(group, ("weight", "members"), where)
        members = tuple(_member(entry, folder, f"{where}, member {m + 1}")
                        for m, entry in enumerate(group["members"]))
        _check_sum([m.weight for m in members], f"{where}: its members")
        result.append(Group(_number(group.get("weight", 1.0), where), members))
    _check_sum([g.weight for g in result], f"{source}: groups")
    return tuple(result)


def _postprocessing(values: object, source: Path) -> WeightingSettings:
    if values is None:
        return WeightingSettings()
    fields = {f.name: f.type for f in dataclasses.fields(WeightingSettings)}
    where = f"{source}: postprocessing"
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping of {', '.join(fields)}")
    _check_keys(values, list(fields), where)
    for name, value in values.items():
        if fields[name] == "bool" and not isinstance(value, bool):
            raise InputError(f"{where}: {name} must be true or false, got {value!r}")
        if fields[name] == "float":
            _number(value, where, name)
    return WeightingSettings(**{name: float(v) if fields[name] == "float" else v for name, v in values.items()})


def read_ensemble(path: str | Path) -> Ensemble:
    """Read an ensemble file, or wrap a single ``.pt`` checkpoint; InputError on bad content or a
    checkpoint that does not exist."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ensemble file does not exist")
    if path.suffix == ".pt":
        return Ensemble((Group(1.0, (Member(Path(os.path.abspath(path)), 1.0),)),))
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not a readable ensemble file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: an ensemble file has 'groups' and optionally 'postprocessing'")
    _check_keys(data, ("groups", "postprocessing"), str(path))
    ensemble = Ensemble(_groups(data.get("groups"), path.parent, path),
                        _postprocessing(data.get("postprocessing"), path))
    missing = [str(p) for p in ensemble.checkpoints if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"{path}: checkpoint {missing[0]} does not exist{more}")
    return ensemble


def write_ensemble(path: str | Path, ensemble: Ensemble, header: str = "") -> None:
    """Write ``ensemble`` as YAML, atomically, its checkpoints relative to the file's folder;
    ``header`` (comment lines) goes first."""
    folder = Path(os.path.abspath(Path(path).parent))

    def relative(checkpoint: Path) -> str:
        return PurePath(os.path.relpath(checkpoint, folder)).as_posix()

    data = {"groups": [{"weight": g.weight,
                        "members": [{"checkpoint": relative(m.checkpoint), "weight": m.weight} for m in g.members]}
                       for g in ensemble.groups],
            "postprocessing": dataclasses.asdict(ensemble.postprocessing)}
    atomic.write_text(path, header + yaml.safe_dump(data, sort_keys=False))
