"""Which segmentation made a folder's masks, because a cell id ``{ID}_{k}`` names a physical cell
only on the masks it was made on (neighbours swap numbers between segmentations).

``segmentation.json`` (:data:`FILE`) records it: the segmentator writes one into its cell-mask
folder, image_cutter.py copies it into the cell dataset, and a label folder may carry one to say
which masks its ids refer to (``hpasc-labels remap`` writes it). The 4th place's
published labels were made on HPA's own segmentation (:data:`HPA_PUBLISHED`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpasc.core import atomic
from hpasc.core.errors import InputError

EXACT = 1.0
"""The label scale of HPA's own masks: its post-processing at full size."""
FILE = "segmentation.json"
BACKENDS = ("hpa", "classical", "unknown")


@dataclass(frozen=True)
class Provenance:
    """``backend``: hpa (HPA's networks), classical, or unknown; ``weights``: weight file name →
    SHA-256 (HPA's networks)."""

    backend: str
    weights: dict[str, str] = field(default_factory=dict)
    label_scale: float = EXACT
    """HPA's post-processing ran on maps shrunk by this (``--label-scale``; 1: HPA's exact masks)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        scale = {} if self.label_scale == EXACT else {"label_scale": self.label_scale}
        return {"backend": self.backend, "weights": dict(sorted(self.weights.items())), **scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """The record :meth:`to_dict` wrote (KeyError, TypeError or ValueError if it is not one)."""
        return cls(str(data["backend"]), {str(k): str(v) for k, v in data.get("weights", {}).items()},
                   float(data.get("label_scale", EXACT)))

    def describe(self) -> str:
        scale = "" if self.label_scale == EXACT else f" labelled at scale {self.label_scale:g}"
        return {"hpa": "HPA's segmentation", "classical": "the classical backend",
                "unknown": "masks of unknown origin"}[self.backend] + scale


HPA_PUBLISHED = Provenance("hpa")
UNKNOWN = Provenance("unknown")


def write_provenance(folder: str | os.PathLike, provenance: Provenance) -> None:
    atomic.write_text(Path(folder) / FILE, json.dumps(provenance.to_dict(), indent=1) + "\n")


def read_provenance(folder: str | os.PathLike) -> Provenance | None:
    """The folder's provenance, or None when it has no ``segmentation.json``."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        return Provenance.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a readable segmentation record ({exc})") from None


def same_cell_ids(made_on: Provenance, used_on: Provenance) -> bool:
    """Whether ids made on ``made_on``'s masks may be trusted on ``used_on``'s: both HPA's (any weight
    files of theirs agreeing), or the same record. Unknown origins cannot be told apart."""
    if UNKNOWN in (made_on, used_on):
        return True
    if made_on.backend == used_on.backend == "hpa" and made_on.label_scale == used_on.label_scale:
        common = set(made_on.weights) & set(used_on.weights)
        return all(made_on.weights[name] == used_on.weights[name] for name in common)
    return made_on == used_on


def cells_alike(trained_on: Provenance, used_on: Provenance) -> bool:
    """Whether ``used_on``'s masks are made the way ``trained_on``'s were, so that a model trained on
    cells of the one sees cells like its own in the other: the same backend and, for HPA's networks,
    the same weight files where both record them. The label scale is not compared (HPA's masks at
    ``--label-scale 0.25`` match its exact ones at F1 0.998); unknown origins cannot be told apart."""
    if UNKNOWN in (trained_on, used_on):
        return True
    common = set(trained_on.weights) & set(used_on.weights)
    return trained_on.backend == used_on.backend and all(trained_on.weights[n] == used_on.weights[n] for n in common)


def record_provenance(folder: Path, provenance: Provenance, keeps_others: bool) -> None:
    """Write ``folder``'s segmentation record (a mask folder's or a cell dataset's); refuse to add
    the output of another segmentation to outputs that stay (``keeps_others``): their cell ids would
    mean different things."""
    old = read_provenance(folder)
    if keeps_others and old is not None and not same_cell_ids(old, provenance):
        raise InputError(f"{folder} holds masks or cells made by {old.describe()}; this run uses "
                         f"{provenance.describe()}: use another folder, or --overwrite to redo them all")
    folder.mkdir(parents=True, exist_ok=True)
    write_provenance(folder, provenance)


def label_folder_made_on(labels: Path, dataset: Path) -> None:
    """Give a label folder written from a dataset's cells the dataset's record, so that training
    can tell which masks its ids refer to (InputError if it already holds ids of other masks)."""
    provenance = read_provenance(dataset)
    if provenance is not None:
        record_provenance(labels, provenance, keeps_others=True)
