"""The model spec: what a checkpoint records so that a model can be rebuilt and fed without flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hpasc.classes import NEGATIVE, NUM_CLASSES, is_class_index
from hpasc.errors import InputError
from hpasc.weights_cache import one_line


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and feed it: architecture, input, outputs, scaling."""

    arch: str
    in_channels: int
    outputs: tuple[int, ...]  # the class index of each output column (18 outputs: classes 0..17)
    tile_size: int
    scale: float = 1 / 65535  # uint16 intensities → [0, 1]
    recipe: dict[str, Any] | None = None
    """How its training tiles were cut (the cell store's record: mode, context, zeroing, the
    heuristics' numbers); None for checkpoints made before it was recorded (padded tiles)."""
    segmentation: dict[str, Any] | None = None
    """Which segmentation made the masks its training cells were cut from (the cell store's
    ``segmentation.json``: backend, weight checksums, label scale); None where unrecorded."""

    @property
    def negative_head(self) -> bool:
        """Whether the model has its own Negative output (else Negative is derived from the rest)."""
        return NEGATIVE in self.outputs

    def to_dict(self) -> dict[str, Any]:
        """Plain values (outputs as a list), as stored in a checkpoint."""
        return {**asdict(self), "outputs": list(self.outputs)}

    @classmethod
    def from_dict(cls, data: object) -> ModelSpec:
        """The spec stored by :meth:`to_dict`; InputError if it is incomplete or inconsistent."""
        fields = ("arch", "in_channels", "outputs", "tile_size", "scale")
        if not isinstance(data, dict) or any(f not in data for f in fields):
            raise InputError(f"model_spec must be a dict with {', '.join(fields)}")
        outputs = data["outputs"]
        if (not isinstance(outputs, (list, tuple)) or not outputs or len(set(outputs)) != len(outputs)
                or not all(is_class_index(c) for c in outputs)):
            raise InputError(f"model_spec outputs must be distinct class indices 0..{NUM_CLASSES - 1}, "
                             f"not {outputs!r}")
        try:
            recipe, segmentation = data.get("recipe"), data.get("segmentation")
            for name, value in (("recipe", recipe), ("segmentation", segmentation)):
                if value is not None and not isinstance(value, dict):
                    raise TypeError(f"{name} must be a mapping, not {value!r}")
            return cls(str(data["arch"]), int(data["in_channels"]), tuple(outputs),
                       int(data["tile_size"]), float(data["scale"]), recipe, segmentation)
        except (TypeError, ValueError) as exc:
            raise InputError(f"model_spec has an invalid value ({one_line(exc)})") from None
