"""The layout of a synthetic image: where its cells lie and what shape they take (an irregular
outline around an elliptic nucleus), and rasterising that plan into cell and nucleus masks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hpasc.tools.synthetic.draw import Numbers

ANGLE_BINS = 256  # directions in which a cell outline gives its radius


@dataclass(frozen=True)
class Cell:
    """The geometry of one planned cell; the nucleus centre is the origin of its outline."""

    cy: float
    cx: float
    radius: float
    outline: np.ndarray  # cell radius per angle bin, measured from the nucleus centre
    axes: tuple[float, float]  # nucleus semi-axes, major first
    tilt: float  # nucleus major-axis direction
    margin: float  # how far (in nucleus radii) the cell's own claim around its nucleus extends
    mitotic: bool

    @property
    def reach(self) -> float:
        return float(self.outline.max())


@dataclass
class Local:
    """Pixel geometry of a cell inside its bounding box, relative to the nucleus centre."""

    rows: slice
    cols: slice
    dist: np.ndarray
    bins: np.ndarray
    rho: np.ndarray  # elliptical nucleus radius: < 1 inside the nucleus


def plan_cells(height: int, width: int, count: int, mitotic: int,
               rng: np.random.Generator) -> list[Cell]:
    """Place up to ``count`` cells: dividing ones inside, a few on the border, most in colonies."""
    scale = math.sqrt(height * width)
    # Fewer cells come out bigger, so that sparse and crowded fields both look like cultures.
    coverage = rng.uniform(0.25, 0.5)
    mean_radius = float(np.clip(math.sqrt(coverage * height * width / (math.pi * count)),
                                scale / 30, scale / 15))
    border = int(rng.integers(2, 6))
    cells: list[Cell] = []
    for k in range(count):
        is_mitotic = k < mitotic
        mode = "inside" if is_mitotic else "border" if k < mitotic + border else "colony"
        for _ in range(40):
            radius = float(np.clip(mean_radius * rng.uniform(0.7, 1.3), scale / 40, scale / 14))
            centre = _propose(mode, radius, cells, height, width, rng)
            if centre is None:
                continue
            cell = _make_cell(centre, radius * (0.8 if is_mitotic else 1.0), is_mitotic,
                              scale / 1024, rng)
            if _fits(cell, cells):
                cells.append(cell)
                break
    return cells


def _propose(mode: str, radius: float, cells: list[Cell], height: int, width: int,
             rng: np.random.Generator) -> tuple[float, float] | None:
    if mode == "inside":
        margin = 1.2 * radius
        y, x = rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)
    elif mode == "border":
        depth = rng.uniform(0, 0.5 * radius)
        side = int(rng.integers(4))
        along = rng.uniform(0, height - 1 if side < 2 else width - 1)
        y, x = [(along, depth), (along, width - 1 - depth), (depth, along),
                (height - 1 - depth, along)][side]
    elif cells and rng.random() < 0.65:
        # Next to an existing cell, closer than the sum of their radii so that the two touch.
        parent = cells[int(rng.integers(len(cells)))]
        angle = rng.uniform(0, 2 * math.pi)
        distance = (radius + parent.radius) * rng.uniform(0.75, 0.92)
        y, x = parent.cy + distance * math.sin(angle), parent.cx + distance * math.cos(angle)
    else:
        y, x = rng.uniform(0, height - 1), rng.uniform(0, width - 1)
    if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
        return None
    return float(y), float(x)


def _make_cell(centre: tuple[float, float], radius: float, mitotic: bool, unit: float,
               rng: np.random.Generator) -> Cell:
    if mitotic:
        # The condensed chromosomes: a thin plate across a round cell.
        axes = (radius * rng.uniform(0.42, 0.52), max(1.2, radius * rng.uniform(0.1, 0.14)))
        harmonics = rng.normal(0, 0.015, (6, 2))
    else:
        mean = radius * rng.uniform(0.33, 0.45)
        ratio = rng.uniform(0.6, 1.0)
        axes = (mean / math.sqrt(ratio), max(1.2, mean * math.sqrt(ratio)))
        spread = np.array([[0.08], [0.14], [0.07], [0.05], [0.03], [0.02]])
        harmonics = rng.normal(0, 1, (6, 2)) * spread
    tilt = float(rng.uniform(0, math.pi))
    margin = min(0.5, (1.5 * unit + 1) / axes[1])
    angles = np.arange(ANGLE_BINS) * (2 * math.pi / ANGLE_BINS)
    k = np.arange(1, 7)[:, None]
    wave = (harmonics[:, :1] * np.cos(k * angles) + harmonics[:, 1:] * np.sin(k * angles)).sum(0)
    outline = radius * (1 + wave)
    # The nucleus (and the strip around it that the cell always claims) stays inside the cell.
    floor = ellipse_radius(axes, tilt, angles) * (1 + margin) * 1.15 + 2
    outline = np.maximum(outline, floor).astype(np.float32)
    return Cell(centre[0], centre[1], radius, outline, axes, tilt, margin, mitotic)


def _fits(cell: Cell, cells: list[Cell]) -> bool:
    """Cells may overlap (they then share a border) but never crowd out a nucleus."""
    if not cells:
        return True
    centres = np.array([(c.cy, c.cx) for c in cells])
    distance = np.hypot(centres[:, 0] - cell.cy, centres[:, 1] - cell.cx)
    radii = np.array([c.radius for c in cells])
    nuclear = np.array([c.axes[0] * (1 + c.margin) for c in cells])
    own = cell.axes[0] * (1 + cell.margin)
    needed = np.maximum(0.72 * (radii + cell.radius), nuclear + own + 2)
    return bool(np.all(distance >= needed))


def ellipse_radius(axes: tuple[float, float], tilt: float, angle: Numbers) -> Numbers:
    """Distance from an ellipse's centre to its boundary in direction ``angle``."""
    a, b = axes
    return a * b / np.sqrt((b * np.cos(angle - tilt)) ** 2 + (a * np.sin(angle - tilt)) ** 2)


def _locate(cell: Cell, height: int, width: int, pad: int) -> Local:
    half = cell.reach + pad
    y0, y1 = max(0, math.floor(cell.cy - half)), min(height, math.ceil(cell.cy + half) + 1)
    x0, x1 = max(0, math.floor(cell.cx - half)), min(width, math.ceil(cell.cx + half) + 1)
    ys = np.arange(y0, y1, dtype=np.float32) - np.float32(cell.cy)
    xs = np.arange(x0, x1, dtype=np.float32) - np.float32(cell.cx)
    y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (len(ys), len(xs))))
    x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (len(ys), len(xs))))
    dist, angle = cv2.cartToPolar(x, y)
    bins = (angle * np.float32(ANGLE_BINS / (2 * math.pi))).astype(np.intp) % ANGLE_BINS
    cos, sin = np.float32(math.cos(cell.tilt)), np.float32(math.sin(cell.tilt))
    rho = cv2.magnitude((x * cos + y * sin) / np.float32(cell.axes[0]),
                        (y * cos - x * sin) / np.float32(cell.axes[1]))
    return Local(slice(y0, y1), slice(x0, x1), dist, bins, rho)


def rasterise(plan: list[Cell], height: int, width: int,
              wobble: np.ndarray) -> tuple[np.ndarray, list[Local]]:
    """Grow each cell from its nucleus up to its outline; where cells meet, the nearer one wins.

    Nearness is the distance relative to each cell's own outline, so big cells push the border
    towards small ones; a faint smooth noise roughens the borders.
    """
    best = np.full((height, width), np.inf, np.float32)
    cells = np.zeros((height, width), np.uint16)
    unit = math.sqrt(height * width) / 1024
    locals_ = [_locate(cell, height, width, pad=int(4 * unit) + 3) for cell in plan]
    for index, (cell, local) in enumerate(zip(plan, locals_), start=1):
        score = local.dist / cell.outline[local.bins] + 0.05 * wobble[local.rows, local.cols]
        # The nucleus and a thin strip around it belong to the cell whatever its neighbours do.
        own = local.rho < 1 + cell.margin
        score[own] = local.rho[own] - 10
        box = best[local.rows, local.cols]
        claim = (score < 1) & (score < box)
        box[claim] = score[claim]
        cells[local.rows, local.cols][claim] = index
    for index, (cell, local) in enumerate(zip(plan, locals_), start=1):
        _keep_nucleus_component(cells[local.rows, local.cols], index, cell, local)
    return cells, locals_


def _keep_nucleus_component(box: np.ndarray, index: int, cell: Cell, local: Local) -> None:
    """Drop the pieces of a cell that neighbours cut off from its nucleus."""
    mask = (box == index).view(np.uint8)
    _, components = cv2.connectedComponents(mask, connectivity=4)
    seed = components[round(cell.cy) - local.rows.start, round(cell.cx) - local.cols.start]
    box[(components != seed) & (mask > 0)] = 0


def nucleus_masks(cells: np.ndarray, locals_: list[Local]) -> np.ndarray:
    """Nucleus instance masks: each cell's pixels inside its nucleus, carrying the cell's id."""
    nuclei = np.zeros_like(cells)
    for index, local in enumerate(locals_, start=1):
        box = nuclei[local.rows, local.cols]
        box[(local.rho < 1) & (cells[local.rows, local.cols] == index)] = index
    return nuclei
