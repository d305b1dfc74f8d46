"""The tile spec: every number that decides what a cell tile looks like, recorded with the tiles.

image_cutter.py writes it into the cell store (``store.json``, and each image's ``image.json``),
training copies it into every checkpoint's model spec, and inference cuts each member's tiles by
its checkpoint's spec, as timm's ``PretrainedCfg`` holds every preprocessing number of a model.
One rule (:meth:`TileSpec.compatible`) says whether tiles cut one way can stand for tiles cut
another, and one serialisation (:meth:`TileSpec.to_dict`/:meth:`TileSpec.from_dict`) is the
record; records written before the spec existed (a ``recipe`` dict and a ``tile_size``, or
nothing) read as the settings that made them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hpasc.cells.thresholds import THRESHOLDS

VERSION = 1
MODES = ("pad", "resize")
ZEROING = ("outside", "others")
THEIR_MARGIN = 16  # px around the squared box in the 4th place's crop
_COMPARED = ("mode", "context", "zero", "margin", "thresholds")  # all but the size


@dataclass(frozen=True)
class TileSpec:
    """How tiles are cut: side ``size``; ``mode`` pad (the box padded to a square) | resize (the
    box stretched); ``context`` pixels of the surroundings kept; ``zero`` outside (everything
    outside the cell zeroed) | others (the 4th place's crop: only other cells zeroed, the box
    squared and grown by ``margin`` px); ``thresholds``, the border/outlier heuristics' numbers
    the store's factors were computed with."""

    size: int = 512
    mode: str = "pad"
    context: int = 0
    zero: str = "outside"
    margin: int | None = None
    """px around the squared box when ``zero`` is others (default 16, theirs); 0 otherwise."""
    thresholds: tuple[tuple[str, float], ...] = field(default_factory=lambda: tuple(sorted(THRESHOLDS.items())))

    def __post_init__(self) -> None:
        if self.margin is None:
            object.__setattr__(self, "margin", THEIR_MARGIN if self.zero == "others" else 0)
        if self.size < 1 or self.context < 0 or self.margin < 0 or self.mode not in MODES \
                or self.zero not in ZEROING:
            raise ValueError(f"bad tile spec {self.describe()}")
        if self.zero == "others" and (self.mode != "pad" or self.context):
            raise ValueError("zero others is the 4th place's crop: mode pad, no context (it keeps a margin)")
        if self.zero == "outside" and self.margin:
            raise ValueError("a margin belongs to the 4th place's crop (zero others); zero outside keeps --context")

    def resized(self, size: int) -> TileSpec:
        """These tiles at side ``size``."""
        return dataclasses.replace(self, size=size)

    def compatible(self, other: TileSpec) -> str | None:
        """Why tiles cut per ``other`` cannot stand for tiles cut per this spec (None when they can):
        every difference but the size, which a reader resizes."""
        differs = [name for name in _COMPARED if getattr(self, name) != getattr(other, name)]
        if not differs:
            return None
        return f"expected {self.describe(differs)}; given {other.describe(differs)}"

    def describe(self, names: tuple[str, ...] | list[str] = ("size", "mode", "context", "zero", "margin")) -> str:
        """``size 512, mode pad, …`` for the named fields (the heuristics' numbers as name=value)."""
        def text(name: str) -> str:
            value = getattr(self, name)
            return " ".join(f"{k}={v}" for k, v in value) if name == "thresholds" else str(value)
        return ", ".join(f"{name} {text(name)}" for name in names)

    def to_dict(self) -> dict[str, Any]:
        """The record (plain JSON values), as the cell store and checkpoints hold it."""
        return {"version": VERSION, "size": self.size, "mode": self.mode, "context": self.context,
                "zero": self.zero, "margin": self.margin, "thresholds": dict(self.thresholds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileSpec:
        """The spec of a :meth:`to_dict` record; ValueError for another version or a bad value."""
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} tile spec: {data!r}")
        try:
            return cls(int(data["size"]), str(data["mode"]), int(data["context"]), str(data["zero"]),
                       int(data["margin"]), tuple(sorted((str(k), float(v)) for k, v in data["thresholds"].items())))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"incomplete tile spec {data!r} ({exc})") from None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TileSpec:
        """The spec a cell store's or a model spec's record holds: its ``tile_spec``, or, for records
        made before it existed, its ``tile_size`` and ``recipe`` (mode, context, zero, factors; none
        recorded: the defaults, which made those tiles)."""
        if record.get("tile_spec") is not None:
            return cls.from_dict(record["tile_spec"])
        recipe = record.get("recipe") or {}
        thresholds = recipe.get("factors", THRESHOLDS)
        return cls(int(record["tile_size"]), str(recipe.get("mode", "pad")), int(recipe.get("context", 0)),
                   str(recipe.get("zero", "outside")),
                   thresholds=tuple(sorted((str(k), float(v)) for k, v in thresholds.items())))
