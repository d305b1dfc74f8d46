"""The 4th place's per-cell quality factors (1.0 = clean), used to filter training cells and to
down-weight predictions at inference.

*Border factor*, from the cell's nucleus: a nucleus cut by the image border has a straight edge,
so its bounding box's first or last row (or column) is nearly full. With r = 1 − (the fuller of
the two edge rows) / (box width), and likewise for columns, each direction gives 1.0 for
r > 0.3, (3.33·r)^0.1 for 0.01 < r ≤ 0.3 and 0.001 below; the factor is the product of both. A cell
whose nucleus has no blue signal (or that has no nucleus) gets 0.01.

*Outlier factor*: among the cells whose border factor is above 0.01, a cell whose red sum is below
0.077 × their mean, or whose blue sum × yellow sum is below 0.05 × their mean, is debris or a
mis-segmentation: 0.001.

Sums are over the channels as floats in [0, 1] (x / 65535), as in the 4th place's code. The
numbers are the tile spec's (:class:`~hpasc.cells.thresholds.Thresholds`; these are their defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

from hpasc.cells.thresholds import CLEAN, Thresholds
from hpasc.core.classes import MITOTIC_SPINDLE
from hpasc.core.images import Region


def _edge_factor(ratio: float, thresholds: Thresholds) -> float:
    if ratio > thresholds.edge_clean_above:
        return CLEAN
    if ratio > thresholds.edge_cut_below:
        return (ratio * 3.33) ** 0.1
    return thresholds.cut


def channel_sums(labels: np.ndarray, planes: np.ndarray, ids: list[int],
                 regions: Sequence[Region | None] | None = None) -> np.ndarray:
    """Sums of each channel of ``planes`` (H×W×C uint16) / 65535 over each label of ``ids``: N×C.

    Summed inside each label's bounding box (OpenCV's masked mean × pixel count, all channels in
    one pass), which touches each pixel about once instead of copying the image per channel.
    ``regions``: ``ndi.find_objects(labels)`` when the caller has it already.
    """
    boxes = ndi.find_objects(labels, max_label=max(ids, default=0)) if regions is None else regions
    sums = np.zeros((len(ids), planes.shape[2]), np.float64)
    for index, mask_id in enumerate(ids):
        box = boxes[mask_id - 1]
        if box is not None:
            inside = (labels[box] == mask_id).view(np.uint8)
            means = cv2.mean(np.ascontiguousarray(planes[box]), mask=inside)
            sums[index] = np.array(means[:planes.shape[2]]) * np.count_nonzero(inside)
    return sums / 65535.0


def border_factors(nuclei: np.ndarray, blue: np.ndarray, ids: list[int], thresholds: Thresholds,
                   regions: Sequence[Region | None] | None = None) -> np.ndarray:
    """The border factor of each cell id in ``ids``; ``nuclei`` carries the cells' ids
    (``regions``: ``ndi.find_objects(nuclei)`` when the caller has it already)."""
    boxes = ndi.find_objects(nuclei, max_label=max(ids, default=0)) if regions is None else regions
    factors = np.full(len(ids), thresholds.no_nucleus)
    for index, mask_id in enumerate(ids):
        box = boxes[mask_id - 1]
        if box is None:
            continue
        nucleus = nuclei[box] == mask_id
        if not blue[box][nucleus].any():
            continue
        height, width = nucleus.shape
        across = (width - max(nucleus[0].sum(), nucleus[-1].sum())) / width
        down = (height - max(nucleus[:, 0].sum(), nucleus[:, -1].sum())) / height
        factors[index] = _edge_factor(across, thresholds) * _edge_factor(down, thresholds)
    return factors


def outlier_factors(cells: np.ndarray, image: np.ndarray, ids: list[int], border: np.ndarray,
                    thresholds: Thresholds, regions: Sequence[Region | None] | None = None) -> np.ndarray:
    """The outlier factor of each cell id in ``ids`` of a uint16 H×W×4 (R, G, B, Y) image
    (``regions``: as :func:`channel_sums` takes them)."""
    candidates = border > thresholds.no_nucleus
    factors = np.full(len(ids), CLEAN)
    if not candidates.any():
        return factors
    sums = channel_sums(cells, image, ids, regions)
    red, blue_yellow = sums[:, 0], sums[:, 2] * sums[:, 3]
    faint = (red < thresholds.red_share * red[candidates].mean()) | \
        (blue_yellow < thresholds.blue_yellow_share * blue_yellow[candidates].mean())
    factors[candidates & faint] = thresholds.outlier
    return factors


def keep_for_training(border: np.ndarray, outlier: np.ndarray, image_labels: list[int]) -> np.ndarray:
    """Cells to train on: both factors clean, except that an image labelled Mitotic spindle keeps
    all its cells (the 4th place's exception for that rare class)."""
    if MITOTIC_SPINDLE in image_labels:
        return np.ones(len(border), bool)
    return (border >= CLEAN) & (outlier >= CLEAN)
