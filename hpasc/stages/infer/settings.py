"""What an infer run is asked to do (:class:`InferSettings`), and the defaults its command offers.
Light to import: hpasc-infer's flags take their defaults from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpasc.models.precision import Precision
from hpasc.segmentation.settings import SegmentationSettings

SEGMENTATION_BATCH = 4
"""Images per segmentation network batch in infer (segmentator's is 8): infer's slots hold each
image's tiles as well, so fewer images wait for the networks at once."""


@dataclass(frozen=True)
class InferSettings:
    segmentation: SegmentationSettings = field(default_factory=lambda: SegmentationSettings(batch_size=SEGMENTATION_BATCH))
    batch_size: int = 32
    tta: bool = False
    weighting: bool = True
    """Apply the ensemble's cell/image weighting and cell factors (``--no-postprocessing``: raw scores)."""
    save_masks: Path | None = None
    precision: Precision = field(default_factory=Precision)
    cells_out: Path | None = None
    """Also write the per-cell table here (:mod:`hpasc.stages.infer.cell_table`)."""
    embeddings: bool = False
    overlays: Path | None = None
    """Also write a picture of each image's predictions here, with an index.html."""
    overlay_threshold: float = 0.5
    allow_other_segmentation: bool = False
    """Predict with masks made another way than the checkpoints' training cells (a warning, not
    a refusal)."""
