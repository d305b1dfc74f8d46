"""The reference stains of one cell: the nucleus (blue), the microtubules or, in a dividing cell,
the mitotic spindle (red), and the endoplasmic reticulum (yellow)."""

from __future__ import annotations

import math

import numpy as np

from hpasc.tools.synthetic.draw import dots, lines
from hpasc.tools.synthetic.view import View, nucleolus_mask, points_in_nucleus


def nucleus_stain(view: View, rng: np.random.Generator) -> np.ndarray:
    """DNA stain: textured nucleus, chromatin dots, paler nucleoli; a bright plate in mitosis."""
    if view.cell.mitotic:
        return view.nucleus * np.clip(0.85 + 0.3 * view.texture, 0.3, 1.4)
    base = 0.45 + 0.1 * view.texture + 0.12 * np.clip((view.local.rho - 0.75) * 4, 0, 1)
    count = int(rng.integers(15, 40))
    ys, xs = points_in_nucleus(view, count, 0.95, rng)
    chromatin = dots(view.shape, ys, xs, 1.2 * view.unit, rng.uniform(0.15, 0.35, count))
    stain = (base + chromatin) * (1 - 0.35 * nucleolus_mask(view))
    return np.clip(stain, 0, None) * view.nucleus


def microtubules(view: View, rng: np.random.Generator) -> np.ndarray:
    """Gently curved filaments radiating from the centrosome through the cytoplasm."""
    cy, cx = view.along(view.side, view.nucleus_radius(view.side) + 0.08 * view.cell.radius)
    count = int(rng.integers(40, 70))
    length = 1.6 * view.cell.reach
    t = np.linspace(0, length, 8)
    bend = rng.normal(0, 0.5, (count, 1))
    heading = rng.uniform(0, 2 * math.pi, (count, 1)) + bend * (t / length)
    paths = np.stack([cx + t * np.cos(heading), cy + t * np.sin(heading)], axis=-1)
    fibres = lines(view.shape, paths, 1.0 * view.unit) * (0.55 + 0.25 * view.texture)
    fibres += dots(view.shape, np.array([cy]), np.array([cx]), 2 * view.unit, 0.8)
    # Filaments running over the nucleus are out of the focal plane, hence fainter.
    weight = np.where(view.nucleus, 0.3, 1.0).astype(np.float32)
    return np.clip(0.12 + fibres, 0, None) * weight * view.inside


def spindle(view: View, rng: np.random.Generator) -> np.ndarray:
    """A bipolar spindle: fibres from two poles to the chromosome plate, short astral rays."""
    poles = spindle_poles(view)
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
    fibres = lines(view.shape, paths, 1.2 * view.unit)
    fibres += dots(view.shape, poles[:, 1], poles[:, 0], 2 * view.unit, 1.0)
    return np.clip(0.1 + 0.8 * fibres, 0, 1.2) * view.inside


def spindle_poles(view: View) -> np.ndarray:
    """The two poles, (x, y) box coordinates, on the plate's normal."""
    cy, cx = view.centre
    normal = view.cell.tilt + math.pi / 2
    offset = 0.6 * view.cell.radius * np.array([math.cos(normal), math.sin(normal)])
    return np.array([[cx, cy] + offset, [cx, cy] - offset])


def reticulum(view: View) -> np.ndarray:
    """The ER: a tubular network, densest near the nucleus, continuous with its envelope."""
    if view.cell.mitotic:
        return (0.2 + 0.3 * view.network) * view.cytoplasm
    beyond = np.maximum(view.local.rho - 1, 0) * np.float32(view.mean_axis)
    density = 0.3 + 0.7 * np.exp(-beyond / np.float32(0.35 * view.cell.radius))
    envelope_width = np.float32(view.mean_axis / (1.5 * view.unit + 0.5))
    envelope = np.exp(-((view.local.rho - 1) * envelope_width) ** 2)
    return (0.08 + 0.9 * view.network * density) * view.cytoplasm + 0.3 * envelope * view.inside
