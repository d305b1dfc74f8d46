"""The model spec: what a checkpoint records so that a model can be rebuilt and fed without flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpasc.cells.provenance import Provenance
from hpasc.cells.tile_spec import TileSpec
from hpasc.core.classes import NEGATIVE, NUM_CLASSES, is_class_index
from hpasc.core.errors import InputError
from hpasc.core.weights_cache import one_line


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and feed it: architecture, input, outputs, scaling."""

    arch: str
    in_channels: int
    outputs: tuple[int, ...]  # the class index of each output column (18 outputs: classes 0..17)
    tile_spec: TileSpec
    """The tiles it takes: its training store's spec at the model's input size."""
    scale: float = 1 / 65535  # uint16 intensities → [0, 1]
    segmentation: dict[str, Any] | None = None
    """Which segmentation made the masks its training cells were cut from (the cell store's
    ``segmentation.json``: backend, weight checksums, label scale); None where unrecorded."""

    @property
    def tile_size(self) -> int:
        return self.tile_spec.size

    @property
    def negative_head(self) -> bool:
        """Whether the model has its own Negative output (else Negative is derived from the rest)."""
        return NEGATIVE in self.outputs

    def to_dict(self) -> dict[str, Any]:
        """Plain values (outputs as a list, the tile spec's record), as stored in a checkpoint."""
        return {"arch": self.arch, "in_channels": self.in_channels, "outputs": list(self.outputs),
                "tile_spec": self.tile_spec.to_dict(), "scale": self.scale, "segmentation": self.segmentation}

    @classmethod
    def from_dict(cls, data: object) -> ModelSpec:
        """The spec stored by :meth:`to_dict` (or, before tile specs, with ``tile_size`` and
        ``recipe``); InputError if it is incomplete or inconsistent."""
        fields = ("arch", "in_channels", "outputs", "scale")
        if not isinstance(data, dict) or any(f not in data for f in fields) or \
                not ("tile_spec" in data or "tile_size" in data):
            raise InputError(f"model_spec must be a dict with {', '.join(fields)} and tile_spec")
        outputs = data["outputs"]
        if (not isinstance(outputs, (list, tuple)) or not outputs or len(set(outputs)) != len(outputs)
                or not all(is_class_index(c) for c in outputs)):
            raise InputError(f"model_spec outputs must be distinct class indices 0..{NUM_CLASSES - 1}, "
                             f"not {outputs!r}")
        try:
            segmentation = data.get("segmentation")
            for name in ("recipe", "segmentation", "tile_spec"):
                if data.get(name) is not None and not isinstance(data[name], dict):
                    raise TypeError(f"{name} must be a mapping, not {data[name]!r}")
            if segmentation is not None:  # read here, once: its users take it as a valid record
                Provenance.from_dict(segmentation)
            return cls(str(data["arch"]), int(data["in_channels"]), tuple(outputs), TileSpec.from_record(data),
                       float(data["scale"]), segmentation)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"model_spec has an invalid value ({one_line(exc)})") from None
