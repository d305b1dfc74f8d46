"""What a segmentation is asked to be: the backend, HPA's weight files, the scale of HPA's
post-processing, the network batch and precision. One typed value that segmentator.py and infer.py
both fill from their flags (:mod:`hpasc.commands.segment_flags`) and hand to the
:class:`~hpasc.segmentation.segmenter.Segmenter`.

Light to import (no torch): the entry points import it to parse their flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpasc.cells.provenance import EXACT
from hpasc.models.precision import Precision
from hpasc.segmentation.weight_files import CELL_WEIGHTS, NUCLEI_WEIGHTS, default_cache_dir, resolve_weights

BACKENDS = ("auto", "hpa", "classical")
MIN_LABEL_SCALE = 0.05


def check_label_scale(value: float) -> float:
    """``value`` if it is a usable label scale (ValueError, saying the range, if not)."""
    if not MIN_LABEL_SCALE <= value <= EXACT:
        raise ValueError(f"expected a label scale between {MIN_LABEL_SCALE:g} and {EXACT:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class ModelFiles:
    """HPA's weight files: explicit paths, else the cache (downloaded there when possible, from
    ``url`` if given, e.g. a mirror, else Zenodo)."""

    nuclei: Path | None = None
    cells: Path | None = None
    cache_dir: Path | None = None
    url: str | None = None

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()

    def choices(self) -> dict[str, Path | None]:
        """Weights file name → the explicit path given for it (None: use the cache)."""
        return {NUCLEI_WEIGHTS: self.nuclei, CELL_WEIGHTS: self.cells}

    def check(self) -> None:
        """Explicit paths are user input: refuse a missing one before any work starts."""
        for name, path in self.choices().items():
            if path is not None:
                resolve_weights(name, path, self.cache, download=False)

    def available(self) -> bool:
        return all((path or self.cache / name).is_file() for name, path in self.choices().items())

    def resolve(self, progress: bool) -> dict[str, Path]:
        """The two files' paths, downloading missing ones into the cache (InputError if that fails)."""
        return {name: resolve_weights(name, path, self.cache, download=True, base_url=self.url,
                                      progress=progress)
                for name, path in self.choices().items()}


@dataclass(frozen=True)
class SegmentationSettings:
    """``backend``: hpa, classical or auto (hpa when its weights are at hand); ``label_scale``: HPA's
    post-processing on maps shrunk by it (:mod:`hpasc.segmentation.rescaled`); ``batch_size``:
    images per network batch; ``precision``: the networks' autocast dtype and layout on CUDA."""

    backend: str = "auto"
    models: ModelFiles = field(default_factory=ModelFiles)
    label_scale: float = EXACT
    batch_size: int = 8
    precision: Precision = field(default_factory=Precision)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        check_label_scale(self.label_scale)
