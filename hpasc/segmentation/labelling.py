"""HPA's cell-segmentator post-processing: network softmax maps -> nucleus and cell instance labels.

:func:`label_cell` reproduces ``hpacellseg.utils.label_cell`` (CellProfiling/HPA-Cell-Segmentation),
the step that turned the two DPN-UNet outputs into the competition's ground-truth masks: the same
steps, thresholds, structuring elements and connectivities, giving the same labels as HPA's code
run on the same scikit-image (0.26; bench/label_cell.py compares the two), but

* with no uint8 wrap-around: HPA casts the cell labels to uint8 before the closing, so images with
  more than 255 nuclei merge or lose cells (label 256 becomes background); here labels stay wide;
* with no uint8 overflow in ``nuclei_pred[..., 1] + cell_pred[..., 1]`` (HPA wraps sums above 255
  back to small values, i.e. strong borders read as "no border");
* on current scikit-image: HPA's positional ``min_size``/``area_threshold`` are deprecated in 0.26,
  whose shim silently turns "under N px" into "up to N px" (scikit-image issue #8001); the sizes
  here are HPA's "under N px";
* 2-5x faster on 2048² maps (one core; the denser the cells, the less): the exact uint8
  thresholds come from 256-entry tables, the binary clean-ups from OpenCV connected components,
  the closing from OpenCV on uint16, the hole filling from one labelling of the background; only
  the three watersheds still run scikit-image's
  routine on exactly HPA's arrays (now most of the time): its heap breaks ties between equal
  markers in an order that depends on every queued pixel, so no cropping, splitting or pruning of
  markers can be proved identical (pruning inert markers does change real outputs).

Watershed caveat: scikit-image 0.25 changed its watershed (scikit-image PR #7071: lines, and costs
no lower than the source marker's), so HPA's code on 0.24 and older, as the competition masks were
made, differs from this (and from HPA's code on 0.26) by some boundary pixels: about 50-100 per
2048² synthetic image, every cell matched at IoU > 0.999.

HPA's steps (inputs are uint8 H×W×3 maps; channel 1 = border, channel 2 = interior, channel 0 is
zeroed by HPA's predictor; all "/255" comparisons are done on exactly HPA's float64 values):

1. nucleus markers: pixels with ``nuc[2]/255 > 0.4 - 0.25`` and
   ``1 - (nuc[1] + cell[1])/255 > 0.05`` (not on a nucleus or cell border); drop 4-connected
   components under 500 px; label them (4-connected).
2. nucleus mask: ``nuc[2]/255 > 0.4``; fill 4-connected holes under 1000 px (touching the image
   edge or not); drop 4-connected components under 8 px.
3. nuclei = watershed of the flat mask from the markers, inside the mask, 4-connected, with
   watershed lines; drop labels under 2500 px; relabel 8-connected (``measure.label``).
4. cell threshold ``t = max(0.22, 0.5 * otsu(cell[2]/255))``; cell mask ``cell[2]/255 > t``
   (HPA means to exclude ``cell[1]/255 > 0.05`` too, but its ``np.invert`` of an int8 array makes
   that a no-op, kept here); landscape ``-cell[2]`` (HPA's ``np.clip(c, 255 t, c)`` returns ``c``).
5. cells = watershed of ``-cell[2]`` from the nuclei, inside the cell mask (4-connected, no lines);
   drop labels under 5500 px; grey closing of the label image with ``disk(6)`` (reflect edges).
6. fill holes: keep pixels whose four neighbours carry the same non-zero label, fill background
   holes (4-connected, not touching the edge), label 4-connected.
7. cells = watershed of ``-cell[2]`` from those labels inside ``labels > 0 | cell[1]/255 > 0.05``;
   fill holes as in 6; label 8-connected; drop components under 5500 px; number in raster order.
8. nuclei = pixels of the step-3 nuclei inside a cell, 8-connected components under 2500 px
   dropped, each pixel carrying its cell's id (so a nucleus has the id of the cell containing it).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage import filters, measure, segmentation
from skimage.morphology import disk

try:  # the C routine behind segmentation.watershed, fed the very arrays watershed() would build
    from skimage.segmentation._watershed_cy import watershed_raveled as _watershed_raveled
except ImportError:  # pragma: no cover - a scikit-image that moved it: use the public function
    _watershed_raveled = None

__all__ = ["BORDER_THRESHOLD", "CELL_MIN_SIZE", "CELL_THRESHOLD_FLOOR", "CLOSING_RADIUS",
           "MARKER_MIN_SIZE", "NUCLEUS_HOLE_SIZE", "NUCLEUS_MARKER_ADJUSTMENT", "NUCLEUS_MASK_MIN_SIZE",
           "NUCLEUS_MIN_SIZE", "NUCLEUS_THRESHOLD", "OTSU_FACTOR", "HPA_SIZES", "Sizes", "cell_threshold",
           "foreground_levels", "interior", "label_cell", "watershed_in_frame"]

NUCLEUS_THRESHOLD = 0.4            # nucleus mask: nuclei_pred[..., 2] / 255 > 0.4
NUCLEUS_MARKER_ADJUSTMENT = -0.25  # nucleus markers: nuclei_pred[..., 2] / 255 > 0.4 + (-0.25)
BORDER_THRESHOLD = 0.05            # border: 1 - (nuc[1] + cell[1]) / 255 <= 0.05; green: cell[1] / 255 > 0.05
MARKER_MIN_SIZE = 500              # nucleus markers smaller than this (4-connected) are dropped
NUCLEUS_HOLE_SIZE = 1000           # holes in the nucleus mask smaller than this are filled
NUCLEUS_MASK_MIN_SIZE = 8          # nucleus-mask specks smaller than this are dropped
NUCLEUS_MIN_SIZE = 2500            # nuclei smaller than this are dropped (twice)
CELL_THRESHOLD_FLOOR = 0.22        # cell mask: cell_pred[..., 2] / 255 > max(0.22, 0.5 * otsu)
OTSU_FACTOR = 0.5
CELL_MIN_SIZE = 5500               # cells smaller than this are dropped (twice)
CLOSING_RADIUS = 6                 # grey closing of the cell labels with disk(6)

_LEVELS = np.arange(256, dtype=np.uint8) / 255  # HPA's float64 value of each uint8 level
_CROSS_OFFSETS = (-1, 0), (0, -1), (0, 1), (1, 0)  # skimage's order of the 4-neighbourhood


@dataclass(frozen=True)
class Sizes:
    """HPA's object sizes in pixels: the areas under which markers, holes, specks, nuclei and
    cells are dropped or filled, and the closing's disk radius."""

    marker: int = MARKER_MIN_SIZE
    nucleus_hole: int = NUCLEUS_HOLE_SIZE
    nucleus_speck: int = NUCLEUS_MASK_MIN_SIZE
    nucleus: int = NUCLEUS_MIN_SIZE
    cell: int = CELL_MIN_SIZE
    closing_radius: int = CLOSING_RADIUS

    @classmethod
    def at_scale(cls, scale: float) -> Sizes:
        """The sizes for maps shrunk by ``scale`` per side: areas × scale², the radius × scale."""
        full = cls()
        return cls(*(max(1, round(getattr(full, name) * scale ** 2))
                     for name in ("marker", "nucleus_hole", "nucleus_speck", "nucleus", "cell")),
                   closing_radius=max(1, round(full.closing_radius * scale)))


HPA_SIZES = Sizes()


def _first_level(above: np.ndarray) -> int:
    """The least level where a monotone table of ``level/255 > t`` turns True (len if never)."""
    first = int(np.argmax(above)) if above.any() else above.size
    if not np.array_equal(above, np.arange(above.size) >= first):
        raise AssertionError("threshold table is not monotone")
    return first


# HPA's float comparisons, decided once for every level they can meet
_MARKER_LEVEL = _first_level(_LEVELS > NUCLEUS_THRESHOLD + NUCLEUS_MARKER_ADJUSTMENT)  # 39
_NUCLEUS_LEVEL = _first_level(_LEVELS > NUCLEUS_THRESHOLD)  # 103
_GREEN_LEVEL = _first_level(_LEVELS > BORDER_THRESHOLD)  # 13
# 1 - s/255.0 > 0.05 for border sums s = nuc[1] + cell[1] up to this (242), none above
_BORDER_SUM = _first_level(~(1 - np.arange(511) / 255.0 > BORDER_THRESHOLD)) - 1


def label_cell(nuclei_pred: np.ndarray, cell_pred: np.ndarray,
               sizes: Sizes = HPA_SIZES) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell instance labels from HPA's two softmax maps, as HPA's ``label_cell``
    (with HPA's :class:`Sizes`; others for maps of another scale, see :mod:`.rescaled`).

    ``nuclei_pred`` and ``cell_pred`` are uint8 H×W×3 maps in HPA's convention (channel 1 border,
    channel 2 interior). Returns ``(nuclei, cells)``: label images (0 = background), the cells
    numbered 1..n in raster order of their first pixels, uint16 (int32 for images over 360 Mpx,
    which could hold more cells); each nucleus pixel carries the id of the cell it lies in.
    """
    nuclei_pred = _check_pred(nuclei_pred, "nuclei_pred")
    cell_pred = _check_pred(cell_pred, "cell_pred")
    if nuclei_pred.shape != cell_pred.shape:
        raise ValueError(f"nuclei_pred {nuclei_pred.shape} and cell_pred {cell_pred.shape} differ in shape")
    cell_border = np.ascontiguousarray(cell_pred[..., 1])
    nuclei = _label_nuclei(np.ascontiguousarray(nuclei_pred[..., 1]),
                           np.ascontiguousarray(nuclei_pred[..., 2]), cell_border, sizes)

    cell_interior = np.ascontiguousarray(cell_pred[..., 2])
    cell_mask = cell_interior >= np.uint16(_cell_level(cell_interior))
    landscape = _landscape(cell_interior)
    cells = _watershed(landscape, nuclei, cell_mask)
    seeds = _components(_fill_holes(_close_labels(cells, sizes.cell, sizes.closing_radius)), 4)[0]

    cells = _watershed(landscape, seeds, (cell_border >= _GREEN_LEVEL) | (seeds > 0))
    cells, _ = _keep_components(_fill_holes(cells), 8, sizes.cell)
    out_type = np.uint16 if cells.size // sizes.cell <= np.iinfo(np.uint16).max else np.int32
    cells = cells.astype(out_type)

    inside = _drop_small((nuclei > 0) & (cells > 0), 8, sizes.nucleus)
    return np.where(inside, cells, 0).astype(out_type), cells


def cell_threshold(cell_interior: np.ndarray) -> float:
    """HPA's cell-mask threshold ``max(0.22, 0.5 * threshold_otsu(cell_interior / 255))``.

    Computed from the 256-level histogram rather than the float image: the same bin edges,
    counts and Otsu sums as scikit-image's, so the same value, bit for bit.
    """
    counts = np.bincount(cell_interior.ravel(), minlength=256)
    levels = np.flatnonzero(counts)
    if levels.size == 1:  # threshold_otsu returns the value of a constant image
        otsu = _LEVELS[levels[0]]
    else:
        hist, edges = np.histogram(_LEVELS[levels], bins=256, weights=counts[levels])
        centers = (edges[:-1] + edges[1:]) / 2.0
        otsu = filters.threshold_otsu(hist=(hist.astype(np.int64), centers))
    return max(CELL_THRESHOLD_FLOOR, otsu * OTSU_FACTOR)


def _cell_level(cell_interior: np.ndarray) -> int:
    """The least uint8 level above :func:`cell_threshold`: the cell mask is ``interior >= it``."""
    return _first_level(_LEVELS > cell_threshold(cell_interior))


def foreground_levels(cell_interior: np.ndarray) -> tuple[int, int, int]:
    """The uint8 levels from which a pixel is cell (interior map, HPA's Otsu-based threshold of
    ``cell_interior``), cell border zone (border map) and nucleus (nucleus interior map)."""
    return _cell_level(cell_interior), _GREEN_LEVEL, _NUCLEUS_LEVEL


def _landscape(cell_interior: np.ndarray) -> np.ndarray:
    """What HPA's cell watersheds flood, framed: ``-clip(c, 255 t, c)``, which is ``-c``."""
    landscape = _pad(cell_interior, np.float64)
    np.negative(landscape, out=landscape)
    return landscape


def watershed_in_frame(cell_interior: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HPA's cell watershed (of ``-cell_interior``, 4-connected, no lines) from ``markers`` in ``mask``."""
    return _watershed(_landscape(cell_interior), markers, mask)


def _check_pred(pred: np.ndarray, name: str) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 H×W×3 map, got {pred.dtype} {pred.shape}")
    return pred


def _label_nuclei(border: np.ndarray, interior: np.ndarray, cell_border: np.ndarray,
                  sizes: Sizes = HPA_SIZES) -> np.ndarray:
    """Steps 1-3: int32 nuclei numbered as ``measure.label`` numbers them."""
    # saturating uint8 sum: the same verdict as the exact sum, as the limit (242) is below 255
    markers = (cv2.add(border, cell_border) <= _BORDER_SUM) & (interior >= _MARKER_LEVEL)
    labels, counts = _sized_components(markers, 4)
    small = counts < sizes.marker
    small[0] = True
    if small[1:].any():
        labels = np.where(small[labels], 0, labels)

    mask = interior >= _NUCLEUS_LEVEL
    holes, counts = _sized_components(~mask, 4)
    small = counts < sizes.nucleus_hole
    small[0] = False
    if small.any():
        mask |= small[holes]
    mask = _drop_small(mask, 4, sizes.nucleus_speck)

    nuclei = _watershed(_pad(mask, np.float64), labels, mask, line=True)
    nuclei = _drop_small_labels(nuclei, sizes.nucleus)
    # regions of equal value, 8-connected (a watershed label can come out in pieces)
    return measure.label(nuclei).astype(np.int32, copy=False)


def _pad(image: np.ndarray, dtype: type) -> np.ndarray:
    """``image`` as ``dtype`` inside a one-pixel frame of zeros."""
    out = np.zeros((image.shape[0] + 2, image.shape[1] + 2), dtype)
    out[1:-1, 1:-1] = image
    return out


def _watershed(padded_image: np.ndarray, markers: np.ndarray, mask: np.ndarray,
               line: bool = False) -> np.ndarray:
    """``segmentation.watershed(image, markers, mask=mask, watershed_line=line)``, 4-connected.

    ``padded_image`` is the float64 image inside a one-pixel frame (as watershed pads it).
    Calls the same C routine with the same arrays as the public function, minus its copies.
    """
    if _watershed_raveled is None:  # pragma: no cover
        return segmentation.watershed(padded_image[1:-1, 1:-1], markers, mask=mask, watershed_line=line)
    padded_mask = _pad(mask, np.int8)
    output = _pad(markers, markers.dtype)
    output[1:-1, 1:-1] *= mask
    width = padded_mask.shape[1]
    neighbours = np.array([dy * width + dx for dy, dx in _CROSS_OFFSETS], np.intp)
    _watershed_raveled(padded_image.ravel(), np.flatnonzero(output), neighbours, padded_mask.ravel(),
                       np.array([width, 1], np.intp), 0.0, output.ravel(), line)
    return output[1:-1, 1:-1]


def _components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Connected components: int32 labels (numbered as OpenCV meets them) and their count + 1."""
    count, labels = cv2.connectedComponentsWithAlgorithm(
        binary.view(np.uint8), connectivity, cv2.CV_32S, cv2.CCL_WU)
    return labels, count


def _sized_components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Connected components: int32 labels and their sizes in px (index 0 = background)."""
    labels, count = _components(binary, connectivity)
    return labels, np.bincount(labels.ravel(), minlength=count)


def _drop_small(binary: np.ndarray, connectivity: int, min_size: int) -> np.ndarray:
    """``remove_small_objects(binary, min_size)``: components of fewer than ``min_size`` px go."""
    labels, sizes = _sized_components(binary, connectivity)
    keep = sizes >= min_size
    keep[0] = False
    return binary if keep[1:].all() else keep[labels]


def _drop_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``remove_small_objects`` on a label image: labels covering fewer than ``min_size`` px go."""
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    return np.where(small[labels], 0, labels) if small.any() else labels


def _close_labels(labels: np.ndarray, min_size: int, radius: int) -> np.ndarray:
    """Labels under ``min_size`` px dropped, then a grey closing with disk(radius), reflected edges.

    As ``remove_small_objects`` then ``skimage.morphology.closing`` (HPA's uint8 cast left out).
    OpenCV's max/min filters are exact on uint16 and, below 2**24, on float32.
    """
    sizes = np.bincount(labels.ravel())
    wide = sizes.size > np.iinfo(np.uint16).max + 1
    lut = np.arange(sizes.size, dtype=np.float32 if wide else np.uint16)
    lut[sizes < min_size] = 0
    work = lut[labels]
    shape = disk(radius).astype(np.uint8)
    work = cv2.dilate(work, shape, borderType=cv2.BORDER_REFLECT)
    return cv2.erode(work, shape, borderType=cv2.BORDER_REFLECT)


def interior(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels whose four neighbours (inside the image) carry the same label.

    The complement of ``find_boundaries(labels)`` (thick mode, reflected edges) within ``labels > 0``.
    """
    inner = labels != 0
    same = labels[1:] == labels[:-1]
    inner[1:] &= same
    inner[:-1] &= same
    same = labels[:, 1:] == labels[:, :-1]
    inner[:, 1:] &= same
    inner[:, :-1] &= same
    return inner


def _fill_holes(labels: np.ndarray) -> np.ndarray:
    """HPA's ``__fill_holes`` up to its final labelling, which only matters as a partition.

    The interior pixels (see :func:`interior`) with the background components that do not touch
    the image edge filled (4-connected, as ``ndi.binary_fill_holes``).
    """
    inner = interior(labels)
    background, count = _components(~inner, 4)
    hole = np.ones(count, bool)
    hole[0] = False
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        hole[edge] = False
    return inner | hole[background] if hole.any() else inner


def _keep_components(binary: np.ndarray, connectivity: int, min_size: int) -> tuple[np.ndarray, int]:
    """Components of ``binary`` with at least ``min_size`` px, numbered 1..n in raster order.

    As ``measure.label``, ``remove_small_objects`` and ``measure.label`` again.
    """
    labels, sizes = _sized_components(binary, connectivity)
    count = sizes.size - 1
    order = _raster_order(labels, count)
    keep = sizes[1:][order] >= min_size
    kept = int(keep.sum())
    if kept == count and np.array_equal(order, np.arange(count)):
        return labels, count
    lut = np.zeros(count + 1, np.int32)
    lut[order[keep] + 1] = np.arange(1, kept + 1, dtype=np.int32)
    return lut[labels], kept


def _raster_order(labels: np.ndarray, count: int) -> np.ndarray:
    """Labels 1..count (as indices 0..count-1) sorted by their first pixel in raster order.

    OpenCV's scan numbers components in that order, but its parallel and block-based variants
    need not: check it from the rows where new labels appear, and sort when it does not hold.
    """
    identity = np.arange(count)
    if count == 0:
        return identity
    row_max = np.maximum.accumulate(labels.max(axis=1))
    jumps = np.flatnonzero(np.diff(row_max, prepend=0))
    if row_max[-1] == count:
        previous = np.concatenate(([0], row_max[jumps[:-1]]))
        for row, before, after in zip(jumps, previous, row_max[jumps]):
            line = labels[row]
            new = line[line > before]
            firsts = new[np.concatenate(([True], new[1:] != new[:-1]))]  # runs, in column order
            seen = np.unique(firsts, return_index=True)
            in_order = seen[0][np.argsort(seen[1])]
            if not np.array_equal(in_order, np.arange(before + 1, after + 1)):
                break
        else:
            return identity
    values, firsts = np.unique(labels.ravel(), return_index=True)
    return np.argsort(firsts[values > 0], kind="stable")
