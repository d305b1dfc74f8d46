"""``--label-scale S``: HPA's post-processing on maps shrunk by S, its labels brought back to full size.

:func:`label_cell` (HPA's exact steps) costs 0.4-1.3 s on a 2048² image, nearly all of it in three
watersheds over every pixel. At S = 0.25 the same steps run on 1/16 of the pixels with HPA's pixel
sizes scaled by S² (its closing radius by S): the maps' own resolution, as HPA's networks see the
image at 0.25. The labels are then enlarged by nearest neighbour, and every pixel within ⌈1/S⌉ px of
a label edge is decided again at full resolution: whether it is cell by the full-size maps' own
thresholds (HPA's cell-interior level, or its border-zone level), and, where two cells meet, which
cell by a watershed of the full-size cell-interior map seeded from the cells just outside that band
(as HPA's last watershed), run in the boxes around the contacts only. So outlines follow the
full-resolution maps rather than a staircase of S-sized blocks.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from hpasc.segmentation.labelling import Sizes, foreground_levels, label_cell, watershed_in_frame
from hpasc.segmentation.settings import EXACT, check_label_scale

_SQUARE = np.ones((3, 3), np.uint8)


def label_cell_at_scale(nuclei_pred: np.ndarray, cell_pred: np.ndarray,
                        scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei, cells) as :func:`label_cell` gives them, computed at ``scale`` (1: exactly it).

    ``nuclei_pred``/``cell_pred``: HPA's uint8 H×W×3 maps at full size (channel 1 border, 2 interior).
    """
    check_label_scale(scale)
    if scale == EXACT:
        return label_cell(nuclei_pred, cell_pred)
    height, width = cell_pred.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_cell_pred = cv2.resize(cell_pred, size, interpolation=cv2.INTER_AREA)
    small_nuclei, small_cells = label_cell(cv2.resize(nuclei_pred, size, interpolation=cv2.INTER_AREA),
                                           small_cell_pred, Sizes.at_scale(scale))
    reach = math.ceil(1 / scale)
    cell_level, border_level, nucleus_level = foreground_levels(np.ascontiguousarray(small_cell_pred[..., 2]))
    coarse = _enlarge(small_cells, (width, height))
    cells = _refine_edges(coarse, cell_pred, reach, cell_level, border_level)
    _refine_contacts(cells, coarse, _contact_boxes(small_cells, width / size[0], height / size[1], reach),
                     cell_pred, reach)
    nucleus_area = _enlarge((small_nuclei > 0).view(np.uint8), (width, height))
    band = np.flatnonzero(_edge_band(nucleus_area, reach))
    nucleus_area.ravel()[band] = nuclei_pred.reshape(-1, 3)[band, 2] >= nucleus_level
    return np.where((nucleus_area > 0) & (cells > 0), cells, 0).astype(cells.dtype), cells


def _enlarge(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT)


def _window(reach: int) -> np.ndarray:
    return np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)


def _edge_band(labels: np.ndarray, reach: int) -> np.ndarray:
    """Pixels within ``reach`` px (chessboard) of a change of label."""
    return cv2.dilate(labels, _window(reach)) != cv2.erode(labels, _window(reach))


def _refine_edges(coarse: np.ndarray, cell_pred: np.ndarray, reach: int, cell_level: int,
                  border_level: int) -> np.ndarray:
    """The coarse labels with each pixel near an edge re-decided: the nearby cell where the
    full-size maps say cell, background elsewhere (cell-cell contacts are settled after)."""
    nearby = cv2.dilate(coarse, _window(reach))
    band = np.flatnonzero(nearby != cv2.erode(coarse, _window(reach)))
    maps = cell_pred.reshape(-1, 3)
    is_cell = (maps[band, 2] >= cell_level) | (maps[band, 1] >= border_level)
    cells = coarse.copy()
    cells.ravel()[band] = np.where(is_cell, nearby.ravel()[band], 0)
    return cells


def _contacts(labels: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Pixels whose ``window`` holds two different cells."""
    none = np.iinfo(labels.dtype).max
    least = cv2.erode(np.where(labels == 0, none, labels).astype(labels.dtype), window)
    return (least != none) & (cv2.dilate(labels, window) != least)


def _contact_boxes(small: np.ndarray, sx: float, sy: float, reach: int) -> list[tuple[slice, slice]]:
    """Full-size boxes (``small`` enlarged by ``sx``, ``sy``) around the places where two cells
    of the small labels meet, with room for the band on each side."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(_contacts(small, _SQUARE).view(np.uint8), connectivity=8)
    height, width = round(small.shape[0] * sy), round(small.shape[1] * sx)
    margin = 2 * reach + 1
    return [(slice(max(0, int(y * sy) - margin), min(height, math.ceil((y + h) * sy) + margin)),
             slice(max(0, int(x * sx) - margin), min(width, math.ceil((x + w) * sx) + margin)))
            for x, y, w, h, _ in stats[1:count]]


def _refine_contacts(cells: np.ndarray, coarse: np.ndarray, boxes: list[tuple[slice, slice]],
                     cell_pred: np.ndarray, reach: int) -> None:
    """Where two cells meet, split the band between them by HPA's watershed of the full-size
    cell-interior map, seeded from the coarse cells just outside the band (in place)."""
    for box in boxes:
        near = coarse[box]
        contact = _contacts(near, _window(reach))
        if not contact.any():
            continue
        seeds = (cv2.dilate(contact.view(np.uint8), _SQUARE) > 0) & ~contact & (near > 0)
        flood = contact & (cells[box] > 0)
        flooded = watershed_in_frame(np.ascontiguousarray(cell_pred[box][..., 2]),
                                     np.where(seeds, near, 0).astype(np.int32), seeds | flood)
        cells[box][flood] = flooded[flood]
