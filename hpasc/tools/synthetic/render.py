"""The noise-free channel planes of an image: each cell's reference stains and green patterns."""

from __future__ import annotations

import numpy as np

from hpasc.tools.synthetic.draw import textures
from hpasc.tools.synthetic.layout import Cell, Local
from hpasc.tools.synthetic.patterns import GREEN_PATTERNS
from hpasc.tools.synthetic.stains import microtubules, nucleus_stain, reticulum, spindle
from hpasc.tools.synthetic.view import make_view


def render(plan: list[Cell], locals_: list[Local], cells: np.ndarray,
           labels: dict[int, tuple[int, ...]], unit: float,
           rng: np.random.Generator) -> np.ndarray:
    """Noise-free channel planes (red, green, blue, yellow), 0..~1 before the camera model."""
    height, width = cells.shape
    planes = np.zeros((4, height, width), np.float32)
    texture, network = textures((height, width), unit, rng)
    texture2 = np.ascontiguousarray(texture[::-1, ::-1])
    for index, (cell, local) in enumerate(zip(plan, locals_), start=1):
        view = make_view(cell, local, cells, index, texture, texture2, network, unit, rng)
        view.microtubules = spindle(view, rng) if cell.mitotic else microtubules(view, rng)
        view.reticulum = reticulum(view)
        boxes = planes[:, local.rows, local.cols]
        boxes[0] += view.microtubules * rng.uniform(0.8, 1.2)
        boxes[2] += nucleus_stain(view, rng) * rng.uniform(0.8, 1.2)
        boxes[3] += view.reticulum * rng.uniform(0.8, 1.2)
        expression = rng.lognormal(0, 0.3)
        for label in labels[index]:
            boxes[1] += GREEN_PATTERNS[label](view, rng) * (expression * rng.uniform(0.7, 1.0))
    return planes
