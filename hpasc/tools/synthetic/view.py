"""The view of one cell that its stains and patterns draw into: the cell's bounding box, masks
and textures, the side of its nucleus that faces free cytoplasm, and its nucleoli."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from hpasc.tools.synthetic.draw import Numbers, discs
from hpasc.tools.synthetic.layout import ANGLE_BINS, Cell, Local, ellipse_radius


@dataclass
class View:
    """Everything a pattern needs to draw into one cell's bounding box."""

    cell: Cell
    local: Local
    inside: np.ndarray
    nucleus: np.ndarray
    texture: np.ndarray
    texture2: np.ndarray
    network: np.ndarray
    unit: float
    # Direction of the centrosome (and the Golgi and an aggresome beside it) from the nucleus.
    side: float = field(init=False)
    nucleoli: np.ndarray = field(init=False)  # rows of (y, x, radius) in box coordinates
    microtubules: np.ndarray = field(init=False)
    reticulum: np.ndarray = field(init=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.inside.shape

    @property
    def cytoplasm(self) -> np.ndarray:
        return self.inside & ~self.nucleus

    @property
    def centre(self) -> tuple[float, float]:
        """Nucleus centre in box coordinates (y, x)."""
        return (self.cell.cy - self.local.rows.start, self.cell.cx - self.local.cols.start)

    @property
    def mean_axis(self) -> float:
        return math.sqrt(self.cell.axes[0] * self.cell.axes[1])

    def along(self, angle: Numbers, distance: Numbers) -> tuple[Numbers, Numbers]:
        """Box coordinates (y, x) of points at ``distance`` from the nucleus centre."""
        cy, cx = self.centre
        return cy + distance * np.sin(angle), cx + distance * np.cos(angle)

    def nucleus_radius(self, angle: Numbers) -> Numbers:
        return ellipse_radius(self.cell.axes, self.cell.tilt, angle)

    def edge(self, width: float) -> np.ndarray:
        """The cell's outer band of ``width`` pixels (not along the image border)."""
        size = 2 * max(1, round(width)) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        # The erosion's default border value counts outside pixels as cell, so a cell cut by
        # the image border gets no band along the cut.
        eroded = cv2.erode(self.inside.view(np.uint8), kernel).view(bool)
        return self.inside & ~eroded


def make_view(cell: Cell, local: Local, cells: np.ndarray, index: int, texture: np.ndarray,
              texture2: np.ndarray, network: np.ndarray, unit: float,
              rng: np.random.Generator) -> View:
    """The view of cell ``index`` of ``cells``, with its free side and nucleoli drawn from ``rng``."""
    rows, cols = local.rows, local.cols
    inside = cells[rows, cols] == index
    nucleus = inside & (local.rho < 1)
    view = View(cell, local, inside, nucleus, texture[rows, cols], texture2[rows, cols],
                network[rows, cols], unit)
    view.side = _free_side(view, rng)
    count = 0 if cell.mitotic else int(rng.integers(2, 5))
    ys, xs = points_in_nucleus(view, count, 0.5, rng)
    radii = view.mean_axis * rng.uniform(0.16, 0.24, count)
    view.nucleoli = np.stack([ys, xs, radii], axis=1)
    return view


def _free_side(view: View, rng: np.random.Generator) -> float:
    """A direction from the nucleus with cytoplasm beside it (for the centrosome and friends)."""
    angles = rng.uniform(0, 2 * math.pi, 12)
    distance = view.nucleus_radius(angles) + 0.2 * view.cell.radius
    ys, xs = view.along(angles, distance)
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    h, w = view.shape
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    valid[valid] = view.cytoplasm[iy[valid], ix[valid]]
    if valid.any():
        return float(angles[np.argmax(valid)])
    bins = (angles * (ANGLE_BINS / (2 * math.pi))).astype(int) % ANGLE_BINS
    return float(angles[np.argmax(view.cell.outline[bins] - view.nucleus_radius(angles))])


def points_in_nucleus(view: View, count: int, extent: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Box coordinates of points spread uniformly over the nucleus, within ``extent`` radii."""
    s = extent * np.sqrt(rng.uniform(0, 1, count))
    t = rng.uniform(0, 2 * math.pi, count)
    u, v = view.cell.axes[0] * s * np.cos(t), view.cell.axes[1] * s * np.sin(t)
    cos, sin = math.cos(view.cell.tilt), math.sin(view.cell.tilt)
    cy, cx = view.centre
    return cy + u * sin + v * cos, cx + u * cos - v * sin


def nucleolus_mask(view: View) -> np.ndarray:
    """1.0 on the cell's nucleoli (inside its nucleus), 0.0 elsewhere."""
    n = view.nucleoli
    return discs(view.shape, n[:, 0], n[:, 1], n[:, 2], 1.0) * view.nucleus
