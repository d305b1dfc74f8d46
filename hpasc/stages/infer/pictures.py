"""infer.py --overlays: a picture of each image's predictions (cells filled in the colour of their
top class, grey below the threshold), a histogram of the confidences of each class, and an
index.html listing the images with their cells per confident top class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES
from hpasc.core.overlays import OverlayIndex, prediction_overlay, save_figure

HISTOGRAM = "confidences.png"


@dataclass
class PredictionPictures:
    folder: Path
    threshold: float
    index: OverlayIndex = field(init=False)
    confidences: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.index = OverlayIndex(self.folder, "hpasc predictions")

    def add(self, image_id: str, preview: tuple[np.ndarray, np.ndarray], mask_ids: np.ndarray,
            confidences: np.ndarray) -> None:
        top = confidences.argmax(axis=1) if len(confidences) else np.zeros(0, np.int64)
        best = confidences[np.arange(len(top)), top] if len(top) else np.zeros(0)
        rgb, mask = preview
        picture = prediction_overlay(rgb, mask, mask_ids, top, best, self.threshold)
        confident = top[best >= self.threshold]
        self.index.add(image_id, picture, len(top),
                       {int(k): int(n) for k, n in zip(*np.unique(confident, return_counts=True))})
        self.confidences.append(confidences)

    def finish(self) -> Path:
        """Write the histogram and index.html; returns the index."""
        _histogram(np.concatenate([np.zeros((0, NUM_CLASSES)), *self.confidences]), self.folder / HISTOGRAM)
        return self.index.write([(f"confidence of each class over all cells (the threshold {self.threshold} "
                                  "decides the colours)", HISTOGRAM)])


def _histogram(confidences: np.ndarray, path: Path) -> None:
    figure = Figure(figsize=(15, 10))
    axes = figure.subplots(4, 5, sharex=True)
    bins = np.linspace(0, 1, 21)
    for k, axis in enumerate(axes.flat):
        if k >= NUM_CLASSES:
            axis.axis("off")
            continue
        axis.hist(confidences[:, k], bins=bins, color="tab:blue")
        axis.set_title(f"{k} {CLASS_NAMES[k]}"[:32], fontsize=8)
        axis.set_yscale("log")
    figure.supxlabel("confidence")
    figure.supylabel("cells")
    figure.tight_layout()
    save_figure(figure, path)
