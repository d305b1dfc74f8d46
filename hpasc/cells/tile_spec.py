"""The tile spec: every number that decides what a cell tile looks like, recorded with the tiles.

hpasc-cut writes it into the cell store (``store.json``, and each image's ``image.json``) and cuts
and judges the cells by it (:func:`hpasc.cells.cut.cut_image`, its heuristics' numbers included),
training copies it into every checkpoint's model spec, and inference cuts each member's tiles by
its checkpoint's spec, as timm's ``PretrainedCfg`` holds every preprocessing number of a model.
One rule (:meth:`TileSpec.mismatch`, and :meth:`TileSpec.accepts` on it) says whether tiles cut
one way can stand for tiles cut another; one serialisation, derived from the fields
(:meth:`TileSpec.to_dict`/:meth:`TileSpec.from_dict`), is the record: a field a record lacks takes
its default, and an older version is brought up to date by the upgrade table (version 0: the
``tile_size`` and ``recipe`` that stores and checkpoints held before the spec existed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpasc.cells.thresholds import Thresholds

VERSION = 1
MODES = ("pad", "resize")
ZEROING = ("outside", "others")
THEIR_MARGIN = 16  # px around the squared box in the 4th place's crop


def _from_recipe(record: dict[str, Any]) -> dict[str, Any]:
    """A version-0 record (a store's or model spec's ``tile_size`` and ``recipe``, where a missing
    recipe means the defaults, which made those tiles) as version 1."""
    recipe = record.get("recipe") or {}
    upgraded = {"version": 1, "size": record["tile_size"], "thresholds": recipe.get("factors", {})}
    return upgraded | {name: recipe[name] for name in ("mode", "context", "zero") if name in recipe}


_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_recipe}
"""Version N's record → version N + 1's."""

# How a record's plain JSON value becomes a field's value, by the field's declared type.
_READERS: dict[str, Callable[[Any], Any]] = {
    "int": int, "str": str, "int | None": lambda value: None if value is None else int(value),
    "Thresholds": lambda value: Thresholds.from_dict(dict(value)),
}


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
    thresholds: Thresholds = field(default_factory=Thresholds)

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

    def mismatch(self, other: TileSpec, *, size: bool = False) -> str | None:
        """Why tiles cut per ``other`` cannot stand for tiles cut per this spec (None when they can):
        every difference but the size, which a reader resizes; with ``size``, the size too (tiles
        that join one store)."""
        names = [f.name for f in dataclasses.fields(self) if size or f.name != "size"]
        differs = [name for name in names if getattr(self, name) != getattr(other, name)]
        if not differs:
            return None
        return f"expected {self.describe(differs)}; given {other.describe(differs)}"

    def accepts(self, other: TileSpec, *, size: bool = False) -> bool:
        """Whether tiles cut per ``other`` can stand for tiles cut per this spec (:meth:`mismatch`)."""
        return self.mismatch(other, size=size) is None

    def describe(self, names: tuple[str, ...] | list[str] = ("size", "mode", "context", "zero", "margin")) -> str:
        """``size 512, mode pad, …`` for the named fields (the heuristics' numbers as name=value)."""
        def text(name: str) -> str:
            value = getattr(self, name)
            return value.describe() if isinstance(value, Thresholds) else str(value)
        return ", ".join(f"{name} {text(name)}" for name in names)

    def to_dict(self) -> dict[str, Any]:
        """The record (plain JSON values), as the cell store and checkpoints hold it."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"version": VERSION, **{name: value.to_dict() if isinstance(value, Thresholds) else value
                                       for name, value in values.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileSpec:
        """The spec of a :meth:`to_dict` record of this version or an older one (upgraded); a field
        it lacks takes its default. ValueError for a newer version, an unknown field or a bad value."""
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, int) or not 0 <= version <= VERSION:
            raise ValueError(f"not a tile spec of version {VERSION} or older: {data!r}")
        for step in range(version, VERSION):
            data = _UPGRADES[step](data)
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(types) - {"version"})
        if unknown:
            raise ValueError(f"tile spec {data!r} has unknown fields {', '.join(unknown)}")
        try:
            return cls(**{name: _READERS[types[name]](value) for name, value in data.items() if name != "version"})
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"bad tile spec {data!r} ({exc})") from None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TileSpec:
        """The spec a cell store's or a model spec's record holds: its ``tile_spec``, or, for records
        made before it existed, its ``tile_size`` and ``recipe`` (version 0)."""
        if record.get("tile_spec") is not None:
            return cls.from_dict(record["tile_spec"])
        return cls.from_dict({"version": 0, "tile_size": int(record["tile_size"]), "recipe": record.get("recipe")})
