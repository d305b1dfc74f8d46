"""Generate synthetic HPA-like 4-channel cell images with known cell masks and cell labels.

Each image shows 10-40 irregular cells (some touching, some separated by background, some cut by
the image border) in four 16-bit channels: red microtubules, green the protein (drawn per class of
each cell, all 19 classes), blue nuclei and yellow endoplasmic reticulum, under uneven
illumination with camera noise, a background offset and a few bright debris objects.

Written to DIR: {ID}_{red,green,blue,yellow}.png; train.csv (ID,Label, the union of the image's
cell labels); truth/{ID}.png (cell instance masks 1..n); truth/nuclei/{ID}.png (nucleus masks,
each carrying its cell's id); truth/cells.csv (ID,mask_id,Label). Image i depends only on
(seed, i), so outputs are reproducible and a re-run rewrites identical files.
"""

from __future__ import annotations

import argparse
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.special import ndtri

from hpasc import atomic, cli, images
from hpasc.classes import MITOTIC_SPINDLE, NEGATIVE, NUM_CLASSES, format_labels
from hpasc.errors import InputError

log = logging.getLogger(__name__)

MIN_SIZE = 128
MAX_SIZE = 16384
CELL_COUNT = (10, 40)
# Classes that still make sense on a rounded mitotic cell, whose nucleus has become a
# chromosome plate and whose microtubules form the spindle.
MITOSIS_COMPATIBLE = frozenset({6, 9, 13, 14, 16, 17, NEGATIVE})

_ID_NAMESPACE = uuid.UUID("6f1c2b52-3a1e-4d8e-9c57-2f0b8e61a4d3")
_ANGLE_BINS = 256
_SHIFT = 4  # fractional bits of the coordinates handed to OpenCV's drawing functions
_ONE = 1 << _SHIFT
# Standard normal quantiles of the 65536 equally likely 16-bit values: indexing this table with
# random bytes gives normal noise several times faster than Generator.standard_normal.
_NORMAL_QUANTILES = ndtri((np.arange(1 << 16) + 0.5) / (1 << 16)).astype(np.float32)


Numbers = np.ndarray | float


@dataclass(frozen=True, eq=False)
class SyntheticImage:
    """One synthetic image and its truth.

    ``image`` is uint16 H×W×4 (red, green, blue, yellow); ``cells`` and ``nuclei`` are uint16
    instance masks (0 = background, a nucleus carries its cell's id); ``labels`` maps each mask
    id to its sorted class indices.
    """

    image: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    labels: dict[int, tuple[int, ...]]

    @property
    def image_labels(self) -> tuple[int, ...]:
        """The image-level label: the sorted union of the cell labels."""
        return tuple(sorted(set().union(*self.labels.values())))


@dataclass(frozen=True)
class _Cell:
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
class _Local:
    """Pixel geometry of a cell inside its bounding box, relative to the nucleus centre."""

    rows: slice
    cols: slice
    dist: np.ndarray
    bins: np.ndarray
    rho: np.ndarray  # elliptical nucleus radius: < 1 inside the nucleus


@dataclass
class _View:
    """Everything a pattern needs to draw into one cell's bounding box."""

    cell: _Cell
    local: _Local
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
        return _ellipse_radius(self.cell.axes, self.cell.tilt, angle)

    def edge(self, width: float) -> np.ndarray:
        """The cell's outer band of ``width`` pixels (not along the image border)."""
        size = 2 * max(1, round(width)) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        # The erosion's default border value counts outside pixels as cell, so a cell cut by
        # the image border gets no band along the cut.
        eroded = cv2.erode(self.inside.view(np.uint8), kernel).view(bool)
        return self.inside & ~eroded


Pattern = Callable[[_View, np.random.Generator], np.ndarray]


def image_id(seed: int, index: int) -> str:
    """The ID of image ``index`` of the dataset made with ``seed`` (a UUID string)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{seed}/{index}"))


def synthesize_image(size: tuple[int, int], rng: np.random.Generator,
                     classes: tuple[int, ...] | None = None) -> SyntheticImage:
    """Draw one synthetic image of ``size`` (height, width) from ``rng``.

    ``classes`` forces the image's classes instead of drawing them; they must follow the rules
    of drawn ones: Negative alone, and Mitotic spindle with at least one other class.
    """
    height, width = size
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE}, got {height}x{width}")
    chosen = _choose_classes(rng) if classes is None else _check_classes(classes)
    mitotic_labels = _mitotic_labels(chosen, rng)
    count = int(rng.integers(CELL_COUNT[0], CELL_COUNT[1] + 1))
    plan = _plan_cells(height, width, count, len(mitotic_labels), rng)
    unit = math.sqrt(height * width) / 1024
    wobble = _smooth_noise((height, width), 14 * unit, rng)
    cells, locals_ = _rasterise(plan, height, width, wobble)
    nuclei = np.zeros_like(cells)
    for index, local in enumerate(locals_, start=1):
        box = nuclei[local.rows, local.cols]
        box[(local.rho < 1) & (cells[local.rows, local.cols] == index)] = index
    labels = _cell_labels(plan, chosen, mitotic_labels, rng)
    planes = _render(plan, locals_, cells, labels, unit, rng)
    image = _acquire(planes, cells, unit, rng)
    return SyntheticImage(image=image, cells=cells, nuclei=nuclei, labels=labels)


# --- labels -------------------------------------------------------------------------------------

def _choose_classes(rng: np.random.Generator) -> tuple[int, ...]:
    """1-3 classes drawn uniformly, made consistent with the Negative and spindle rules."""
    count = int(rng.choice(3, p=[0.5, 0.35, 0.15])) + 1
    chosen = {int(c) for c in rng.choice(NUM_CLASSES, size=count, replace=False)}
    if NEGATIVE in chosen:
        return (NEGATIVE,)
    if chosen == {MITOTIC_SPINDLE}:
        others = [c for c in range(NUM_CLASSES) if c not in (MITOTIC_SPINDLE, NEGATIVE)]
        chosen.add(int(rng.choice(others)))
    return tuple(sorted(chosen))


def _check_classes(classes: tuple[int, ...]) -> tuple[int, ...]:
    chosen = tuple(sorted({int(c) for c in classes}))
    if not chosen or not all(0 <= c < NUM_CLASSES for c in chosen):
        raise ValueError(f"classes must be a non-empty set of indices 0..{NUM_CLASSES - 1}")
    if NEGATIVE in chosen and len(chosen) > 1:
        raise ValueError("Negative (18) cannot be combined with other classes")
    if chosen == (MITOTIC_SPINDLE,):
        raise ValueError("Mitotic spindle (11) needs another class for the interphase cells")
    return chosen


def _mitotic_labels(chosen: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Labels of the dividing cells of the image (one entry per dividing cell)."""
    if MITOTIC_SPINDLE in chosen:
        return [(MITOTIC_SPINDLE,)] * int(rng.integers(1, 3))
    # Some other images hold a dividing cell too, so that a round cell with a chromosome plate
    # does not by itself mean "Mitotic spindle".
    compatible = tuple(c for c in chosen if c in MITOSIS_COMPATIBLE)
    if compatible and rng.random() < 0.3:
        return [compatible]
    return []


def _cell_labels(plan: list[_Cell], chosen: tuple[int, ...], mitotic: list[tuple[int, ...]],
                 rng: np.random.Generator) -> dict[int, tuple[int, ...]]:
    """Most interphase cells carry all the image's classes, some a subset; each class one cell
    at least."""
    interphase_classes = [c for c in chosen if c != MITOTIC_SPINDLE]
    labels: dict[int, tuple[int, ...]] = {}
    dividing = iter(mitotic)
    interphase = []
    for index, cell in enumerate(plan, start=1):
        if cell.mitotic:
            labels[index] = next(dividing)
            continue
        interphase.append(index)
        if len(interphase_classes) > 1 and rng.random() < 0.25:
            keep = int(rng.integers(1, len(interphase_classes)))
            labels[index] = tuple(sorted(rng.choice(interphase_classes, keep, replace=False)))
        else:
            labels[index] = tuple(interphase_classes)
    carried = set().union(*(labels[i] for i in interphase))
    for missing in sorted(set(interphase_classes) - carried) if interphase else ():
        index = int(rng.choice(interphase))
        labels[index] = tuple(sorted({*labels[index], missing}))
    return {i: tuple(int(c) for c in labels[i]) for i in labels}


# --- geometry -----------------------------------------------------------------------------------

def _plan_cells(height: int, width: int, count: int, mitotic: int,
                rng: np.random.Generator) -> list[_Cell]:
    """Place up to ``count`` cells: dividing ones inside, a few on the border, most in colonies."""
    scale = math.sqrt(height * width)
    # Fewer cells come out bigger, so that sparse and crowded fields both look like cultures.
    coverage = rng.uniform(0.25, 0.5)
    mean_radius = float(np.clip(math.sqrt(coverage * height * width / (math.pi * count)),
                                scale / 30, scale / 15))
    border = int(rng.integers(2, 6))
    cells: list[_Cell] = []
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


def _propose(mode: str, radius: float, cells: list[_Cell], height: int, width: int,
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
               rng: np.random.Generator) -> _Cell:
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
    angles = np.arange(_ANGLE_BINS) * (2 * math.pi / _ANGLE_BINS)
    k = np.arange(1, 7)[:, None]
    wave = (harmonics[:, :1] * np.cos(k * angles) + harmonics[:, 1:] * np.sin(k * angles)).sum(0)
    outline = radius * (1 + wave)
    # The nucleus (and the strip around it that the cell always claims) stays inside the cell.
    floor = _ellipse_radius(axes, tilt, angles) * (1 + margin) * 1.15 + 2
    outline = np.maximum(outline, floor).astype(np.float32)
    return _Cell(centre[0], centre[1], radius, outline, axes, tilt, margin, mitotic)


def _fits(cell: _Cell, cells: list[_Cell]) -> bool:
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


def _ellipse_radius(axes: tuple[float, float], tilt: float, angle: Numbers) -> Numbers:
    """Distance from an ellipse's centre to its boundary in direction ``angle``."""
    a, b = axes
    return a * b / np.sqrt((b * np.cos(angle - tilt)) ** 2 + (a * np.sin(angle - tilt)) ** 2)


def _locate(cell: _Cell, height: int, width: int, pad: int) -> _Local:
    half = cell.reach + pad
    y0, y1 = max(0, math.floor(cell.cy - half)), min(height, math.ceil(cell.cy + half) + 1)
    x0, x1 = max(0, math.floor(cell.cx - half)), min(width, math.ceil(cell.cx + half) + 1)
    ys = np.arange(y0, y1, dtype=np.float32) - np.float32(cell.cy)
    xs = np.arange(x0, x1, dtype=np.float32) - np.float32(cell.cx)
    y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (len(ys), len(xs))))
    x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (len(ys), len(xs))))
    dist, angle = cv2.cartToPolar(x, y)
    bins = (angle * np.float32(_ANGLE_BINS / (2 * math.pi))).astype(np.intp) % _ANGLE_BINS
    cos, sin = np.float32(math.cos(cell.tilt)), np.float32(math.sin(cell.tilt))
    rho = cv2.magnitude((x * cos + y * sin) / np.float32(cell.axes[0]),
                        (y * cos - x * sin) / np.float32(cell.axes[1]))
    return _Local(slice(y0, y1), slice(x0, x1), dist, bins, rho)


def _rasterise(plan: list[_Cell], height: int, width: int,
               wobble: np.ndarray) -> tuple[np.ndarray, list[_Local]]:
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


def _keep_nucleus_component(box: np.ndarray, index: int, cell: _Cell, local: _Local) -> None:
    """Drop the pieces of a cell that neighbours cut off from its nucleus."""
    mask = (box == index).view(np.uint8)
    _, components = cv2.connectedComponents(mask, connectivity=4)
    seed = components[round(cell.cy) - local.rows.start, round(cell.cx) - local.cols.start]
    box[(components != seed) & (mask > 0)] = 0


# --- rendering ----------------------------------------------------------------------------------

def _render(plan: list[_Cell], locals_: list[_Local], cells: np.ndarray,
            labels: dict[int, tuple[int, ...]], unit: float,
            rng: np.random.Generator) -> np.ndarray:
    """Noise-free channel planes (red, green, blue, yellow), 0..~1 before the camera model."""
    height, width = cells.shape
    planes = np.zeros((4, height, width), np.float32)
    texture, network = _textures((height, width), unit, rng)
    texture2 = np.ascontiguousarray(texture[::-1, ::-1])
    for index, (cell, local) in enumerate(zip(plan, locals_), start=1):
        view = _view(cell, local, cells, index, texture, texture2, network, unit, rng)
        view.microtubules = _spindle(view, rng) if cell.mitotic else _microtubules(view, rng)
        view.reticulum = _reticulum(view)
        boxes = planes[:, local.rows, local.cols]
        boxes[0] += view.microtubules * rng.uniform(0.8, 1.2)
        boxes[2] += _nucleus_stain(view, rng) * rng.uniform(0.8, 1.2)
        boxes[3] += view.reticulum * rng.uniform(0.8, 1.2)
        expression = rng.lognormal(0, 0.3)
        for label in labels[index]:
            boxes[1] += GREEN_PATTERNS[label](view, rng) * (expression * rng.uniform(0.7, 1.0))
    return planes


def _view(cell: _Cell, local: _Local, cells: np.ndarray, index: int, texture: np.ndarray,
          texture2: np.ndarray, network: np.ndarray, unit: float,
          rng: np.random.Generator) -> _View:
    rows, cols = local.rows, local.cols
    inside = cells[rows, cols] == index
    nucleus = inside & (local.rho < 1)
    view = _View(cell, local, inside, nucleus, texture[rows, cols], texture2[rows, cols],
                 network[rows, cols], unit)
    view.side = _free_side(view, rng)
    count = 0 if cell.mitotic else int(rng.integers(2, 5))
    ys, xs = _points_in_nucleus(view, count, 0.5, rng)
    radii = view.mean_axis * rng.uniform(0.16, 0.24, count)
    view.nucleoli = np.stack([ys, xs, radii], axis=1)
    return view


def _free_side(view: _View, rng: np.random.Generator) -> float:
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
    bins = (angles * (_ANGLE_BINS / (2 * math.pi))).astype(int) % _ANGLE_BINS
    return float(angles[np.argmax(view.cell.outline[bins] - view.nucleus_radius(angles))])


def _textures(shape: tuple[int, int], unit: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fine texture (mean 0, sd 1) and a reticular network (0..1) from one white noise."""
    noise = _normal(shape, rng)
    fine = cv2.GaussianBlur(noise, (0, 0), max(0.8, 1.2 * unit))
    texture = fine * np.float32(1 / max(fine.std(), 1e-6))
    # Blurring the fine field further equals blurring the noise with the combined sigma.
    middle = cv2.GaussianBlur(fine, (0, 0), max(0.8, 1.6 * unit))
    coarse = cv2.GaussianBlur(middle, (0, 0), max(1.6, 3.5 * unit))
    band = middle - coarse
    # Zero crossings of band-passed noise form a connected mesh of thin tubules.
    network = 1 - np.abs(band) * np.float32(1 / (0.35 * band.std()))
    np.clip(network, 0, 1, out=network)
    return texture, network


def _smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise (sd about 1) varying over about ``scale`` pixels."""
    small = (max(2, round(shape[0] / scale)) + 1, max(2, round(shape[1] / scale)) + 1)
    grid = _normal(small, rng)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _normal(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Standard normal float32 noise (tails cut at 4.3 sd)."""
    count = shape[0] * shape[1]
    index = np.frombuffer(rng.bytes(2 * count), np.uint16).reshape(shape)
    return np.take(_NORMAL_QUANTILES, index)


def _points_in_nucleus(view: _View, count: int, extent: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Box coordinates of points spread uniformly over the nucleus, within ``extent`` radii."""
    s = extent * np.sqrt(rng.uniform(0, 1, count))
    t = rng.uniform(0, 2 * math.pi, count)
    u, v = view.cell.axes[0] * s * np.cos(t), view.cell.axes[1] * s * np.sin(t)
    cos, sin = math.cos(view.cell.tilt), math.sin(view.cell.tilt)
    cy, cx = view.centre
    return cy + u * sin + v * cos, cx + u * cos - v * sin


def _points_in(mask: np.ndarray, count: int, rng: np.random.Generator,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random sub-pixel points on the pixels of ``mask`` (optionally weighted)."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        return np.empty(0), np.empty(0)
    p = None
    if weights is not None:
        w = weights.ravel()[where].astype(np.float64)
        p = w / w.sum()
    picked = rng.choice(where, count, p=p)
    ys, xs = np.divmod(picked, mask.shape[1])
    return ys + rng.uniform(-0.5, 0.5, count), xs + rng.uniform(-0.5, 0.5, count)


def _fixed(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values) * _ONE).astype(np.int32)


def _discs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radii: np.ndarray,
           values: Numbers) -> np.ndarray:
    canvas = np.zeros(shape, np.float32)
    for y, x, r, v in zip(_fixed(ys), _fixed(xs), _fixed(radii), np.broadcast_to(values, len(ys))):
        cv2.circle(canvas, (int(x), int(y)), max(int(r), _ONE), float(v), -1, cv2.LINE_8, _SHIFT)
    return canvas


def _blobs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, axes: np.ndarray,
           angles: np.ndarray, values: Numbers) -> np.ndarray:
    """Filled ellipses; ``axes`` is an N×2 array of semi-axes, ``angles`` in degrees."""
    canvas = np.zeros(shape, np.float32)
    for y, x, (a, b), angle, v in zip(_fixed(ys), _fixed(xs), np.maximum(_fixed(axes), _ONE),
                                      angles, np.broadcast_to(values, len(ys))):
        cv2.ellipse(canvas, (int(x), int(y)), (int(a), int(b)), float(angle), 0, 360, float(v),
                    -1, cv2.LINE_8, _SHIFT)
    return canvas


def _lines(shape: tuple[int, int], paths: np.ndarray, thickness: float,
           value: float = 1.0) -> np.ndarray:
    """Polylines given as a K×N×2 array: K paths of N (x, y) points in box coordinates."""
    canvas = np.zeros(shape, np.float32)
    _draw_lines(canvas, paths, thickness, value)
    return canvas


def _draw_lines(canvas: np.ndarray, paths: np.ndarray, thickness: float, value: float) -> None:
    if len(paths):
        cv2.polylines(canvas, list(_fixed(paths)), False, float(value),
                      max(1, round(thickness)), cv2.LINE_8, _SHIFT)


def _dots(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, sigma: float,
          values: Numbers) -> np.ndarray:
    """Gaussian spots of peak ``values``: impulses blurred once, however many there are."""
    canvas = np.zeros(shape, np.float32)
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    keep = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    np.add.at(canvas, (iy[keep], ix[keep]), np.broadcast_to(values, len(ys))[keep])
    sigma = max(0.6, sigma)
    blurred = cv2.GaussianBlur(canvas, (0, 0), sigma)
    return blurred * np.float32(2 * math.pi * sigma * sigma)


def _nucleolus_mask(view: _View) -> np.ndarray:
    n = view.nucleoli
    return _discs(view.shape, n[:, 0], n[:, 1], n[:, 2], 1.0) * view.nucleus


def _nucleus_stain(view: _View, rng: np.random.Generator) -> np.ndarray:
    """DNA stain: textured nucleus, chromatin dots, paler nucleoli; a bright plate in mitosis."""
    if view.cell.mitotic:
        return view.nucleus * np.clip(0.85 + 0.3 * view.texture, 0.3, 1.4)
    base = 0.45 + 0.1 * view.texture + 0.12 * np.clip((view.local.rho - 0.75) * 4, 0, 1)
    count = int(rng.integers(15, 40))
    ys, xs = _points_in_nucleus(view, count, 0.95, rng)
    chromatin = _dots(view.shape, ys, xs, 1.2 * view.unit, rng.uniform(0.15, 0.35, count))
    stain = (base + chromatin) * (1 - 0.35 * _nucleolus_mask(view))
    return np.clip(stain, 0, None) * view.nucleus


def _microtubules(view: _View, rng: np.random.Generator) -> np.ndarray:
    """Gently curved filaments radiating from the centrosome through the cytoplasm."""
    cy, cx = view.along(view.side, view.nucleus_radius(view.side) + 0.08 * view.cell.radius)
    count = int(rng.integers(40, 70))
    length = 1.6 * view.cell.reach
    t = np.linspace(0, length, 8)
    bend = rng.normal(0, 0.5, (count, 1))
    heading = rng.uniform(0, 2 * math.pi, (count, 1)) + bend * (t / length)
    paths = np.stack([cx + t * np.cos(heading), cy + t * np.sin(heading)], axis=-1)
    fibres = _lines(view.shape, paths, 1.0 * view.unit) * (0.55 + 0.25 * view.texture)
    fibres += _dots(view.shape, np.array([cy]), np.array([cx]), 2 * view.unit, 0.8)
    # Filaments running over the nucleus are out of the focal plane, hence fainter.
    weight = np.where(view.nucleus, 0.3, 1.0).astype(np.float32)
    return np.clip(0.12 + fibres, 0, None) * weight * view.inside


def _spindle(view: _View, rng: np.random.Generator) -> np.ndarray:
    """A bipolar spindle: fibres from two poles to the chromosome plate, short astral rays."""
    poles = _spindle_poles(view)
    a = view.cell.axes[0]
    along = np.linspace(-0.9 * a, 0.9 * a, int(rng.integers(9, 15)))
    cy, cx = view.centre
    tilt = view.cell.tilt
    plate = np.column_stack([cx + along * math.cos(tilt), cy + along * math.sin(tilt)])
    starts = np.repeat(poles, len(plate), axis=0)
    ends = np.tile(plate, (2, 1))
    astral = rng.uniform(0, 2 * math.pi, (2, 8))
    rays = np.stack([np.cos(astral), np.sin(astral)], axis=-1)
    tips = poles[:, None, :] + 0.3 * view.cell.radius * rays
    starts = np.concatenate([starts, np.repeat(poles, 8, axis=0)])
    ends = np.concatenate([ends, tips.reshape(-1, 2)])
    paths = np.stack([starts, ends], axis=1)
    fibres = _lines(view.shape, paths, 1.2 * view.unit)
    fibres += _dots(view.shape, poles[:, 1], poles[:, 0], 2 * view.unit, 1.0)
    return np.clip(0.1 + 0.8 * fibres, 0, 1.2) * view.inside


def _spindle_poles(view: _View) -> np.ndarray:
    """The two poles, (x, y) box coordinates, on the plate's normal."""
    cy, cx = view.centre
    normal = view.cell.tilt + math.pi / 2
    offset = 0.6 * view.cell.radius * np.array([math.cos(normal), math.sin(normal)])
    return np.array([[cx, cy] + offset, [cx, cy] - offset])


def _reticulum(view: _View) -> np.ndarray:
    """The ER: a tubular network, densest near the nucleus, continuous with its envelope."""
    if view.cell.mitotic:
        return (0.2 + 0.3 * view.network) * view.cytoplasm
    beyond = np.maximum(view.local.rho - 1, 0) * np.float32(view.mean_axis)
    density = 0.3 + 0.7 * np.exp(-beyond / np.float32(0.35 * view.cell.radius))
    envelope_width = np.float32(view.mean_axis / (1.5 * view.unit + 0.5))
    envelope = np.exp(-((view.local.rho - 1) * envelope_width) ** 2)
    return (0.08 + 0.9 * view.network * density) * view.cytoplasm + 0.3 * envelope * view.inside


# --- green patterns, one per class --------------------------------------------------------------

def _nucleoplasm(view: _View, rng: np.random.Generator) -> np.ndarray:
    fill = np.clip(0.65 + 0.15 * view.texture2, 0, None) * (1 - 0.7 * _nucleolus_mask(view))
    return fill * view.nucleus


def _nuclear_membrane(view: _View, rng: np.random.Generator) -> np.ndarray:
    width = (1.2 * view.unit + 0.5) / view.mean_axis
    ring = np.exp(-((view.local.rho - (1 - width)) / width) ** 2)
    return ring * view.inside


def _nucleoli(view: _View, rng: np.random.Generator) -> np.ndarray:
    return (0.9 * _nucleolus_mask(view) + 0.06) * view.nucleus


def _fibrillar_centres(view: _View, rng: np.random.Generator) -> np.ndarray:
    ys, xs = [], []
    for y, x, r in view.nucleoli:
        count = int(rng.integers(3, 9))
        s, t = 0.8 * r * np.sqrt(rng.uniform(0, 1, count)), rng.uniform(0, 2 * math.pi, count)
        ys.append(y + s * np.sin(t))
        xs.append(x + s * np.cos(t))
    ys, xs = np.concatenate(ys), np.concatenate(xs)
    spots = _dots(view.shape, ys, xs, 0.8 * view.unit, rng.uniform(0.7, 1.0, len(ys)))
    return (spots + 0.1 * _nucleolus_mask(view)) * view.nucleus


def _speckles(view: _View, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(10, 26))
    ys, xs = _points_in_nucleus(view, count, 0.8, rng)
    size = view.mean_axis * rng.uniform(0.05, 0.1, count)
    axes = np.column_stack([size, size * rng.uniform(0.4, 0.9, count)])
    angles = rng.uniform(0, 180, count)
    # A second, offset lobe makes each speckle irregular.
    shift = rng.uniform(0, 2 * math.pi, count)
    ys2, xs2 = ys + size * np.sin(shift), xs + size * np.cos(shift)
    values = rng.uniform(0.6, 1.0, count)
    speckles = np.maximum(_blobs(view.shape, ys, xs, axes, angles, values),
                          _blobs(view.shape, ys2, xs2, 0.7 * axes, angles + 60, values))
    return (speckles + 0.12) * view.nucleus


def _nuclear_bodies(view: _View, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(2, 7))
    ys, xs = _points_in_nucleus(view, count, 0.75, rng)
    return (_dots(view.shape, ys, xs, 1.4 * view.unit, 1.0) + 0.04) * view.nucleus


def _endoplasmic_reticulum(view: _View, rng: np.random.Generator) -> np.ndarray:
    return view.reticulum


def _golgi(view: _View, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(12, 28))
    angles = view.side + rng.normal(0, 0.35, count)
    gap = np.abs(rng.normal(0.07, 0.05, count)) * view.cell.radius
    distance = view.nucleus_radius(angles) + gap
    ys, xs = view.along(angles, distance)
    long = rng.uniform(1.5, 4.0, count) * view.unit + 0.5
    axes = np.column_stack([long, rng.uniform(0.8, 1.8, count) * view.unit + 0.5])
    tangent = np.degrees(angles) + 90 + rng.normal(0, 30, count)
    return _blobs(view.shape, ys, xs, axes, tangent, rng.uniform(0.6, 1.0, count)) * view.cytoplasm


def _intermediate_filaments(view: _View, rng: np.random.Generator) -> np.ndarray:
    cy, cx = view.centre
    r = view.cell.radius
    t = np.linspace(-1.4 * view.cell.reach, 1.4 * view.cell.reach, 40)
    count = int(rng.integers(3, 8))
    angle = rng.uniform(0, math.pi, (count, 1))
    offset = rng.uniform(-0.75, 0.75, (count, 1)) * r
    amplitude = rng.uniform(0.04, 0.1, (count, 1)) * r
    wavelength = rng.uniform(0.5, 1.1, (count, 1)) * r
    phase = rng.uniform(0, 2 * math.pi, (count, 1))
    wave = offset + amplitude * np.sin(2 * math.pi * t / wavelength + phase)
    c, s = np.cos(angle), np.sin(angle)
    paths = np.stack([cx + t * c - wave * s, cy + t * s + wave * c], axis=-1)
    fibres = _lines(view.shape, paths, 2.5 * view.unit) * (0.75 + 0.2 * view.texture2)
    # Filaments running over the nucleus are out of the focal plane, hence fainter.
    weight = np.where(view.nucleus, 0.35, 1.0).astype(np.float32)
    return np.clip(fibres, 0, None) * weight * view.inside


def _actin(view: _View, rng: np.random.Generator) -> np.ndarray:
    cy, cx = view.centre
    reach = 1.5 * view.cell.reach
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    spacing = rng.uniform(0.1, 0.17) * view.cell.radius
    canvas = np.zeros(view.shape, np.float32)
    for offset in np.arange(-reach, reach, spacing) + rng.uniform(0, spacing):
        offset += rng.normal(0, 0.15 * spacing)
        ends = np.array([[[cx - reach * c - offset * s, cy - reach * s + offset * c],
                          [cx + reach * c - offset * s, cy + reach * s + offset * c]]])
        # Parallel fibres never cross, so drawing each over the canvas loses nothing.
        _draw_lines(canvas, ends, 1.3 * view.unit, rng.uniform(0.5, 1.0))
    cortex = 0.6 * view.edge(1.5 * view.unit + 0.5)
    return np.maximum(canvas, cortex) * view.inside


def _microtubule_pattern(view: _View, rng: np.random.Generator) -> np.ndarray:
    return view.microtubules


def _mitotic_spindle(view: _View, rng: np.random.Generator) -> np.ndarray:
    poles = _spindle_poles(view)
    pole_dots = _dots(view.shape, poles[:, 1], poles[:, 0], 1.5 * view.unit, 0.8)
    return view.microtubules + pole_dots * view.inside


def _centrosome(view: _View, rng: np.random.Generator) -> np.ndarray:
    y, x = view.along(view.side, view.nucleus_radius(view.side) + 0.08 * view.cell.radius)
    count = int(rng.integers(1, 3))
    turn = rng.uniform(0, 2 * math.pi)
    ys = np.array([y, y + 3 * view.unit * math.sin(turn)])[:count]
    xs = np.array([x, x + 3 * view.unit * math.cos(turn)])[:count]
    return _dots(view.shape, ys, xs, 1.3 * view.unit, 1.0) * view.inside


def _plasma_membrane(view: _View, rng: np.random.Generator) -> np.ndarray:
    return view.edge(2.5 * view.unit + 0.5) * np.float32(0.9) + 0.04 * view.inside


def _mitochondria(view: _View, rng: np.random.Generator) -> np.ndarray:
    cytoplasm = view.cytoplasm
    count = int(np.clip(cytoplasm.sum() / (120 * view.unit ** 2), 30, 200))
    beyond = np.maximum(view.local.rho - 1, 0) * np.float32(view.mean_axis)
    density = np.exp(-beyond / np.float32(0.4 * view.cell.radius))
    ys, xs = _points_in(cytoplasm, count, rng, density)
    half = rng.uniform(1.5, 4.5, len(ys)) * view.unit + 0.5
    angle = rng.uniform(0, math.pi, len(ys))
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    paths = np.stack([np.column_stack([xs - dx, ys - dy]),
                      np.column_stack([xs + dx, ys + dy])], axis=1)
    rods = _lines(view.shape, paths, 1.5 * view.unit) * np.clip(0.8 + 0.2 * view.texture2, 0, None)
    return rods * cytoplasm


def _aggresome(view: _View, rng: np.random.Generator) -> np.ndarray:
    radius = view.mean_axis * rng.uniform(0.3, 0.45)
    y, x = view.along(view.side, view.nucleus_radius(view.side) + radius + 1.5 * view.unit)
    turn = rng.uniform(0, 2 * math.pi, 2)
    ys = np.concatenate([[y], y + 0.6 * radius * np.sin(turn)])
    xs = np.concatenate([[x], x + 0.6 * radius * np.cos(turn)])
    blob = _discs(view.shape, ys, xs, np.array([radius, 0.55 * radius, 0.5 * radius]), 1.0)
    return (blob + 0.06) * view.cytoplasm


def _cytosol(view: _View, rng: np.random.Generator) -> np.ndarray:
    return np.clip(0.55 + 0.12 * view.texture2, 0, None) * view.cytoplasm


def _vesicles(view: _View, rng: np.random.Generator) -> np.ndarray:
    cytoplasm = view.cytoplasm
    count = int(np.clip(cytoplasm.sum() / (100 * view.unit ** 2), 25, 250))
    ys, xs = _points_in(cytoplasm, count, rng)
    return _dots(view.shape, ys, xs, 1.2 * view.unit, rng.uniform(0.5, 1.0, len(ys))) * cytoplasm


def _negative(view: _View, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(view.shape, np.float32)


# Indexed by class, in the order of hpasc.classes.CLASS_NAMES.
GREEN_PATTERNS: tuple[Pattern, ...] = (
    _nucleoplasm, _nuclear_membrane, _nucleoli, _fibrillar_centres, _speckles, _nuclear_bodies,
    _endoplasmic_reticulum, _golgi, _intermediate_filaments, _actin, _microtubule_pattern,
    _mitotic_spindle, _centrosome, _plasma_membrane, _mitochondria, _aggresome, _cytosol,
    _vesicles, _negative,
)


# --- acquisition --------------------------------------------------------------------------------

def _acquire(planes: np.ndarray, cells: np.ndarray, unit: float,
             rng: np.random.Generator) -> np.ndarray:
    """Blur, debris, uneven illumination, offset and camera noise; uint16 H×W×4."""
    height, width = cells.shape
    _add_debris(planes, cells, unit, rng)
    amplitude = rng.uniform(14000, 36000, 4)
    offset = rng.uniform(300, 1500, 4)
    gain, read = rng.uniform(1.5, 3.0), rng.uniform(40, 80)
    shared = rng.uniform(0.75, 1.15, (3, 3))
    channels = []
    for channel in range(4):
        grid = (shared * rng.uniform(0.95, 1.05, (3, 3)) * amplitude[channel]).astype(np.float32)
        light = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        signal = cv2.GaussianBlur(planes[channel], (0, 0), max(0.6, unit))
        signal *= light
        signal += np.float32(offset[channel])
        # Shot noise grows with the signal (variance = gain × signal), read noise does not.
        spread = cv2.sqrt(signal * np.float32(gain) + np.float32(read * read))
        spread *= _normal((height, width), rng)
        signal += spread
        np.clip(signal, 0, 65535, out=signal)
        channels.append(np.rint(signal, out=signal).astype(np.uint16))
    return cv2.merge(channels)


def _add_debris(planes: np.ndarray, cells: np.ndarray, unit: float,
                rng: np.random.Generator) -> None:
    """2-4 bright irregular specks, bright in several channels, well clear of every cell."""
    free = cv2.distanceTransform((cells == 0).view(np.uint8), cv2.DIST_L2, 5)
    height, width = cells.shape
    for _ in range(int(rng.integers(2, 5))):
        radius = rng.uniform(3, 9) * unit + 1
        room = np.flatnonzero(free > 1.8 * radius + 3 * unit + 4)
        if room.size == 0:
            return
        y, x = divmod(int(rng.choice(room)), width)
        lobes = int(rng.integers(2, 5))
        # Every lobe covers the centre, so a speck is one connected object.
        turn = rng.uniform(0, 2 * math.pi, lobes)
        shift = rng.uniform(0.1, 0.35, lobes) * radius
        ys, xs = y + shift * np.sin(turn), x + shift * np.cos(turn)
        half = math.ceil(2 * radius) + 2
        rows = slice(max(0, y - half), min(height, y + half + 1))
        cols = slice(max(0, x - half), min(width, x + half + 1))
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        blob = _discs(shape, ys - rows.start, xs - cols.start,
                      radius * rng.uniform(0.4, 0.7, lobes), 1.0)
        brightness = rng.uniform(0.1, 0.6, (4, 1, 1)).astype(np.float32)
        brightness[rng.choice(4, 2, replace=False)] = rng.uniform(1.0, 1.6, (2, 1, 1))
        np.maximum(planes[:, rows, cols], blob * brightness, out=planes[:, rows, cols])


# --- dataset and command line -------------------------------------------------------------------

def generate_dataset(out: Path, n: int, size: tuple[int, int], seed: int,
                     options: cli.CommonOptions) -> list[str]:
    """Write ``n`` images with their truth to ``out`` (see the module docstring); return the IDs."""
    if n < 1:
        raise ValueError(f"need at least one image, got n={n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    ids: list[str] = []
    image_rows = ["ID,Label"]
    cell_rows = ["ID,mask_id,Label"]
    for index in options.bar(range(n), desc="synthetic images", unit="image"):
        name = image_id(seed, index)
        synthetic = synthesize_image(size, np.random.default_rng([seed, index]))
        for channel, plane in zip(images.CHANNELS, np.moveaxis(synthetic.image, -1, 0)):
            images.write_png(out / f"{name}_{channel}.png", plane)
        images.write_label_image(out / "truth" / f"{name}.png", synthetic.cells)
        images.write_label_image(out / "truth" / "nuclei" / f"{name}.png", synthetic.nuclei)
        image_rows.append(f"{name},{format_labels(synthetic.image_labels)}")
        cell_rows += [f"{name},{mask},{format_labels(labels)}"
                      for mask, labels in sorted(synthetic.labels.items())]
        ids.append(name)
    atomic.write_text(out / "train.csv", "\n".join(image_rows) + "\n")
    atomic.write_text(out / "truth" / "cells.csv", "\n".join(cell_rows) + "\n")
    return ids


def parse_size(text: str) -> tuple[int, int]:
    """argparse type for ``S`` (square) or ``HxW``, each side in MIN_SIZE..MAX_SIZE."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected S or HxW such as 1024 or 768x1024, got {text!r}")
    sides = [int(p) for p in parts]
    if not all(MIN_SIZE <= side <= MAX_SIZE for side in sides):
        raise argparse.ArgumentTypeError(
            f"each side must lie in {MIN_SIZE}..{MAX_SIZE}, got {text!r}")
    return (sides[0], sides[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = cli.stage_parser(__doc__)
    # argparse would name the file (synthetic.py), which cannot be run on its own.
    parser.prog = "python -m hpasc.synthetic"
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing; existing files are overwritten)")
    parser.add_argument("-n", "--count", type=cli.positive_int, default=8, metavar="N",
                        help="number of images to generate")
    parser.add_argument("--size", type=parse_size, default="1024", metavar="S|HxW",
                        help=f"image size in pixels: S for S×S, or HxW (height x width); "
                             f"each side {MIN_SIZE}..{MAX_SIZE}")
    parser.add_argument("--seed", type=cli.at_least(0), default=0, metavar="K",
                        help="random seed (>= 0); image i depends only on the seed and i")
    return parser


def _run(args: argparse.Namespace) -> None:
    ids = generate_dataset(args.out, args.count, args.size, args.seed,
                           cli.CommonOptions.from_args(args))
    log.info("wrote %d synthetic images to %s", len(ids), args.out)


def main(argv: list[str] | None = None) -> None:
    cli.run(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
