"""The 4th place's post-processing of one image's cell scores, in their order:

1. cell/image weighting: for every class except Mitotic spindle (11) and Negative (18), a cell's
   score becomes ``cell_weight × its score + image_weight × the mean score of the image's clean
   cells`` (clean: border and outlier factors both 1). Without a clean cell the scores stay.
   Mitotic spindle is a property of single dividing cells, Negative is derived per cell: neither
   is shared across an image.
2. cell factors: every score of a cell is multiplied by its border factor and its outlier factor
   (cells cut by the image edge and debris rank last), each when switched on.
"""

from __future__ import annotations

import numpy as np

from hpasc.core.classes import MITOTIC_SPINDLE, NEGATIVE, NUM_CLASSES
from hpasc.stages.infer.ensemble_file import WeightingSettings

SHARED_CLASSES = np.array([c for c in range(NUM_CLASSES) if c not in (MITOTIC_SPINDLE, NEGATIVE)])


def weight_scores(scores: np.ndarray, border: np.ndarray, outlier: np.ndarray,
                  settings: WeightingSettings) -> np.ndarray:
    """One image's (n_cells, 19) scores after weighting and factors (a new array)."""
    result = np.array(scores, dtype=np.float64)
    clean = (border == 1.0) & (outlier == 1.0)
    if clean.any():
        image_mean = result[clean][:, SHARED_CLASSES].mean(axis=0)
        result[:, SHARED_CLASSES] = (settings.cell_weight * result[:, SHARED_CLASSES]
                                     + settings.image_weight * image_mean)
    factor = np.ones(len(result))
    if settings.border_factor:
        factor *= border
    if settings.outlier_factor:
        factor *= outlier
    return result * factor[:, None]
