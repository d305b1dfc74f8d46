"""The numbers of the 4th place's border and outlier heuristics: a part of every
:class:`~hpasc.cells.tile_spec.TileSpec`, which :mod:`~hpasc.cells.factors` applies. Light to import."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

CLEAN = 1.0
"""A clean cell's factor."""


@dataclass(frozen=True)
class Thresholds:
    """``no_nucleus``: the border factor of a cell without a (blue) nucleus; ``cut``: of a nucleus
    cut by the image's edge (edge ratio at most ``edge_cut_below``; clean above
    ``edge_clean_above``); ``outlier``: the outlier factor of a cell whose red sum is below
    ``red_share`` × the mean, or whose blue × yellow sum is below ``blue_yellow_share`` × the mean."""

    no_nucleus: float = 0.01
    cut: float = 0.001
    outlier: float = 0.001
    red_share: float = 0.077
    blue_yellow_share: float = 0.05
    edge_clean_above: float = 0.3
    edge_cut_below: float = 0.01

    def to_dict(self) -> dict[str, float]:
        return dict(sorted(dataclasses.asdict(self).items()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        """The record's numbers; one it lacks takes today's default; ValueError for an unknown name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown heuristics' numbers {', '.join(unknown)}")
        return cls(**{name: float(value) for name, value in data.items()})

    def describe(self) -> str:
        return " ".join(f"{name}={value}" for name, value in sorted(self.to_dict().items()))
