"""Classical cell segmentation that needs no network weights.

``segment_classical(image)`` turns a uint16 H×W×4 (R, G, B, Y) image into (nuclei, cells): uint16
label images, 0 = background, ids 1..n, every cell holding exactly one nucleus that carries the
cell's id. It imitates the label rules of HPA's own segmentator (HPA-Cell-Segmentation's
``label_cell``): a cell is grown from one nucleus; cytoplasm whose nucleus lies outside the image
is dropped unless it joins a cell that has one; nuclei under 2500 and cells under 5500 pixels of a
2048² image are dropped; holes in a cell are filled; cells cut by the image border are kept.

Method, at a working resolution of about 512² (labels are upsampled by nearest neighbour):

1. Each channel is normalised by robust percentiles (1st -> 0, 99.8th -> 1), so 8- and 16-bit data
   and any exposure give the same result.
2. Nuclei: the blue channel, lightly smoothed, is thresholded by Otsu's method on its square root
   (the square root evens out shot noise and brings dim and bright nuclei together, so the
   threshold falls between the background and the dimmest nuclei); if what it finds does not
   stand out from the background noise the image has no nuclei (a dark or noise-only image).
   Holes are filled and small objects dropped. Touching nuclei are split by a watershed whose
   seeds are the maxima of log(distance to the background × brightness) that stand out by
   ``SPLIT_RATIO``: a neck is cut only where its half-width times its brightness is under 40% of
   the smaller lobe's, which splits two nuclei pressed together or a bright mitotic chromatin mass
   beside a nucleus, but not a lobed or bean-shaped nucleus (HPA keeps those as one cell).
3. Cells: the sum of the normalised red, yellow and blue channels (microtubules, ER, nucleus:
   HPA's cell model reads the same three, and a cell with little ER still has microtubules),
   smoothed, is the cytoplasm signal. The foreground starts 12% of the way from the background
   level to the signal's Otsu threshold, which takes in the faint cell edges as HPA does; a
   watershed of the negated signal from the nuclei divides it, so touching cells part along the
   dimmest line between them, and foreground that no nucleus reaches is left out.

All sizes are given in pixels of a 2048² image and scaled by sqrt(H·W)/2048 (HPA images of 1728²,
2048² and 3072² show the same field of view), so any H×W works.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

__all__ = ["segment_classical"]

# Sizes below are in pixels of a REFERENCE_SIDE² image.
REFERENCE_SIDE = 2048
# Work at a geometric-mean side of 512 pixels (never upsampled): a nucleus is still ~50 pixels
# across and a cell ~90, ample for IoU >= 0.6, at 1/16 of the pixels of a 2048² image.
WORK_SIDE = 512
# Smoothing of the blue channel: removes shot noise and chromatin texture, keeps nuclear outlines.
NUCLEUS_SIGMA = 4.0
# Smoothing of the cytoplasm signal: merges the fibrous microtubule/ER texture into a cell body
# while the dim lines between touching cells stay valleys.
CELL_SIGMA = 8.0
# HPA's segmentator drops nuclei under 2500 and cells under 5500 pixels (at 2048²): debris,
# slivers of nuclei cut by the border and cell fragments.
MIN_NUCLEUS_AREA = 2500.0
MIN_CELL_AREA = 5500.0
# Split touching nuclei where (half-width × brightness) of the neck is < 1/2.5 of the smaller lobe's.
SPLIT_RATIO = math.log(2.5)
# Outline bumps narrower than this (half-width) are not lobes of their own.
SPLIT_MIN_RADIUS = 16.0
# The cytoplasm foreground begins this fraction of the way from the background level up to the
# Otsu threshold of the cytoplasm signal: Otsu falls mid-way up the bright perinuclear cytoplasm,
# HPA's cells reach out to the faint edge.
CELL_THRESHOLD = 0.12
# The background level: this percentile of the smoothed cytoplasm signal (the darkest gaps between
# cells; above the camera offset that the 1st percentile of the unsmoothed noise lies below).
BACKGROUND_PERCENTILE = 2.0
# Nuclei must outshine the background by this many background standard deviations (smoothed),
# else the image holds no nuclei (a dark or noise-only image gives no cells).
MIN_CONTRAST = 10.0


def segment_classical(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment a uint16 H×W×4 (R, G, B, Y) image into (nuclei, cells) uint16 label images.

    Ids run 1..n in both; nucleus k lies inside cell k; every cell has exactly one nucleus.
    """
    if image.ndim != 3 or image.shape[2] != 4:
        raise ValueError(f"need an H×W×4 image, got shape {image.shape}")
    height, width = image.shape[:2]
    empty = np.zeros((height, width), np.uint16)
    if height == 0 or width == 0:
        return empty, empty.copy()
    side = math.sqrt(height * width)
    factor = min(1.0, WORK_SIDE / side)
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    px = side * factor / REFERENCE_SIDE  # working pixels per reference pixel
    red, blue, yellow = (_normalise(_shrink(image[..., c], shape)) for c in (0, 2, 3))
    nuclei = _nuclei(blue, px)
    if not nuclei.any():
        return empty, empty.copy()
    cells = _cells(red + yellow + blue, nuclei, px)
    nuclei, cells = _relabel(nuclei, cells)
    return _grow(nuclei, (height, width)), _grow(cells, (height, width))


def _shrink(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    # float32 before averaging: integer rounding would make 8- and 16-bit ranges differ.
    plane = plane.astype(np.float32)
    if plane.shape != shape:
        plane = cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return plane


def _grow(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == shape:
        return labels
    return cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _normalise(plane: np.ndarray) -> np.ndarray:
    """Map the 1st percentile to 0 and the 99.8th to 1 (no upper clip); a flat plane becomes 0."""
    low, high = np.percentile(plane, (1.0, 99.8))
    if high <= low:
        return np.zeros_like(plane)
    return np.maximum((plane - low) / (high - low), 0)


def _smooth(plane: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(plane, (0, 0), max(sigma, 0.3))


def _nuclei(blue: np.ndarray, px: float) -> np.ndarray:
    """Nucleus labels (int32, not contiguous) from the normalised blue channel."""
    smooth = _smooth(blue, NUCLEUS_SIGMA * px)
    if smooth.max() <= smooth.min():
        return np.zeros(blue.shape, np.int32)
    threshold = filters.threshold_otsu(np.sqrt(np.maximum(smooth, 0))) ** 2
    mask = smooth > threshold
    inside, outside = smooth[mask], smooth[~mask]
    if outside.size == 0 or inside.mean() - outside.mean() <= MIN_CONTRAST * outside.std():
        return np.zeros(blue.shape, np.int32)
    mask = ndi.binary_fill_holes(mask)
    mask = _drop_small(ndi.label(mask)[0], MIN_NUCLEUS_AREA * px * px) > 0
    distance = ndi.distance_transform_edt(mask)
    # Seeds: the regional maxima left after flooding log(width × brightness) SPLIT_RATIO deep.
    depth = np.log(np.maximum(distance, SPLIT_MIN_RADIUS * px)) + np.log(np.maximum(smooth, threshold))
    flooded = morphology.reconstruction(depth - SPLIT_RATIO, depth, method="dilation")
    seeds = ndi.label(morphology.local_maxima(flooded, connectivity=2) & mask)[0]
    labels = segmentation.watershed(-distance, seeds, mask=mask)
    # A piece too small to be a nucleus rejoins its neighbour instead of leaving a hole.
    labels = _drop_small(labels, MIN_NUCLEUS_AREA * px * px)
    labels = segmentation.watershed(-distance, labels, mask=mask)
    return labels.astype(np.int32)


def _cells(signal: np.ndarray, nuclei: np.ndarray, px: float) -> np.ndarray:
    """Cell labels grown from ``nuclei`` (same ids) over the cytoplasm ``signal``."""
    cyto = _smooth(signal, CELL_SIGMA * px)
    otsu = filters.threshold_otsu(cyto)
    background = np.percentile(cyto, BACKGROUND_PERCENTILE)
    foreground = (cyto > background + (otsu - background) * CELL_THRESHOLD) | (nuclei > 0)
    cells = segmentation.watershed(-cyto, nuclei, mask=foreground).astype(np.int32)
    cells = _drop_small(cells, MIN_CELL_AREA * px * px)
    for k, box in enumerate(ndi.find_objects(cells), start=1):
        if box is not None:  # fill the holes of each cell (not gaps enclosed by several cells)
            crop = cells[box]
            crop[ndi.binary_fill_holes(crop == k) & (crop == 0)] = k
    return cells


def _relabel(nuclei: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the cells 1..n and give each nucleus its cell's id; nuclei of dropped cells go."""
    present = np.flatnonzero(np.bincount(cells.ravel()))
    present = present[present > 0]
    table = np.zeros(max(int(cells.max()), int(nuclei.max())) + 1, np.uint16)
    table[present] = np.arange(1, len(present) + 1)
    return np.where(cells == nuclei, table[nuclei], 0).astype(np.uint16), table[cells]


def _drop_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    """``labels`` with the objects smaller than ``min_area`` pixels set to 0."""
    small = np.bincount(labels.ravel()) < min_area
    small[0] = False
    return np.where(small[labels], 0, labels)
