"""The green (protein) channel: one pattern per class, drawn into a cell's view."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hpasc.tools.synthetic.draw import blobs, discs, dots, draw_lines, lines, points_in
from hpasc.tools.synthetic.stains import spindle_poles
from hpasc.tools.synthetic.view import View, nucleolus_mask, points_in_nucleus

Pattern = Callable[[View, np.random.Generator], np.ndarray]


def _nucleoplasm(view: View, rng: np.random.Generator) -> np.ndarray:
    fill = np.clip(0.65 + 0.15 * view.texture2, 0, None) * (1 - 0.7 * nucleolus_mask(view))
    return fill * view.nucleus


def _nuclear_membrane(view: View, rng: np.random.Generator) -> np.ndarray:
    width = (1.2 * view.unit + 0.5) / view.mean_axis
    ring = np.exp(-((view.local.rho - (1 - width)) / width) ** 2)
    return ring * view.inside


def _nucleoli(view: View, rng: np.random.Generator) -> np.ndarray:
    return (0.9 * nucleolus_mask(view) + 0.06) * view.nucleus


def _fibrillar_centres(view: View, rng: np.random.Generator) -> np.ndarray:
    ys, xs = [], []
    for y, x, r in view.nucleoli:
        count = int(rng.integers(3, 9))
        s, t = 0.8 * r * np.sqrt(rng.uniform(0, 1, count)), rng.uniform(0, 2 * math.pi, count)
        ys.append(y + s * np.sin(t))
        xs.append(x + s * np.cos(t))
    ys, xs = np.concatenate(ys), np.concatenate(xs)
    spots = dots(view.shape, ys, xs, 0.8 * view.unit, rng.uniform(0.7, 1.0, len(ys)))
    return (spots + 0.1 * nucleolus_mask(view)) * view.nucleus


def _speckles(view: View, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(10, 26))
    ys, xs = points_in_nucleus(view, count, 0.8, rng)
    size = view.mean_axis * rng.uniform(0.05, 0.1, count)
    axes = np.column_stack([size, size * rng.uniform(0.4, 0.9, count)])
    angles = rng.uniform(0, 180, count)
    # A second, offset lobe makes each speckle irregular.
    shift = rng.uniform(0, 2 * math.pi, count)
    ys2, xs2 = ys + size * np.sin(shift), xs + size * np.cos(shift)
    values = rng.uniform(0.6, 1.0, count)
    speckles = np.maximum(blobs(view.shape, ys, xs, axes, angles, values),
                          blobs(view.shape, ys2, xs2, 0.7 * axes, angles + 60, values))
    return (speckles + 0.12) * view.nucleus


def _nuclear_bodies(view: View, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(2, 7))
    ys, xs = points_in_nucleus(view, count, 0.75, rng)
    return (dots(view.shape, ys, xs, 1.4 * view.unit, 1.0) + 0.04) * view.nucleus


def _endoplasmic_reticulum(view: View, rng: np.random.Generator) -> np.ndarray:
    return view.reticulum


def _golgi(view: View, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(12, 28))
    angles = view.side + rng.normal(0, 0.35, count)
    gap = np.abs(rng.normal(0.07, 0.05, count)) * view.cell.radius
    distance = view.nucleus_radius(angles) + gap
    ys, xs = view.along(angles, distance)
    long = rng.uniform(1.5, 4.0, count) * view.unit + 0.5
    axes = np.column_stack([long, rng.uniform(0.8, 1.8, count) * view.unit + 0.5])
    tangent = np.degrees(angles) + 90 + rng.normal(0, 30, count)
    return blobs(view.shape, ys, xs, axes, tangent, rng.uniform(0.6, 1.0, count)) * view.cytoplasm


def _intermediate_filaments(view: View, rng: np.random.Generator) -> np.ndarray:
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
    fibres = lines(view.shape, paths, 2.5 * view.unit) * (0.75 + 0.2 * view.texture2)
    # Filaments running over the nucleus are out of the focal plane, hence fainter.
    weight = np.where(view.nucleus, 0.35, 1.0).astype(np.float32)
    return np.clip(fibres, 0, None) * weight * view.inside


def _actin(view: View, rng: np.random.Generator) -> np.ndarray:
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
        draw_lines(canvas, ends, 1.3 * view.unit, rng.uniform(0.5, 1.0))
    cortex = 0.6 * view.edge(1.5 * view.unit + 0.5)
    return np.maximum(canvas, cortex) * view.inside


def _microtubule_pattern(view: View, rng: np.random.Generator) -> np.ndarray:
    return view.microtubules


def _mitotic_spindle(view: View, rng: np.random.Generator) -> np.ndarray:
    poles = spindle_poles(view)
    pole_dots = dots(view.shape, poles[:, 1], poles[:, 0], 1.5 * view.unit, 0.8)
    return view.microtubules + pole_dots * view.inside


def _centrosome(view: View, rng: np.random.Generator) -> np.ndarray:
    y, x = view.along(view.side, view.nucleus_radius(view.side) + 0.08 * view.cell.radius)
    count = int(rng.integers(1, 3))
    turn = rng.uniform(0, 2 * math.pi)
    ys = np.array([y, y + 3 * view.unit * math.sin(turn)])[:count]
    xs = np.array([x, x + 3 * view.unit * math.cos(turn)])[:count]
    return dots(view.shape, ys, xs, 1.3 * view.unit, 1.0) * view.inside


def _plasma_membrane(view: View, rng: np.random.Generator) -> np.ndarray:
    return view.edge(2.5 * view.unit + 0.5) * np.float32(0.9) + 0.04 * view.inside


def _mitochondria(view: View, rng: np.random.Generator) -> np.ndarray:
    cytoplasm = view.cytoplasm
    count = int(np.clip(cytoplasm.sum() / (120 * view.unit ** 2), 30, 200))
    beyond = np.maximum(view.local.rho - 1, 0) * np.float32(view.mean_axis)
    density = np.exp(-beyond / np.float32(0.4 * view.cell.radius))
    ys, xs = points_in(cytoplasm, count, rng, density)
    half = rng.uniform(1.5, 4.5, len(ys)) * view.unit + 0.5
    angle = rng.uniform(0, math.pi, len(ys))
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    paths = np.stack([np.column_stack([xs - dx, ys - dy]),
                      np.column_stack([xs + dx, ys + dy])], axis=1)
    rods = lines(view.shape, paths, 1.5 * view.unit) * np.clip(0.8 + 0.2 * view.texture2, 0, None)
    return rods * cytoplasm


def _aggresome(view: View, rng: np.random.Generator) -> np.ndarray:
    radius = view.mean_axis * rng.uniform(0.3, 0.45)
    y, x = view.along(view.side, view.nucleus_radius(view.side) + radius + 1.5 * view.unit)
    turn = rng.uniform(0, 2 * math.pi, 2)
    ys = np.concatenate([[y], y + 0.6 * radius * np.sin(turn)])
    xs = np.concatenate([[x], x + 0.6 * radius * np.cos(turn)])
    blob = discs(view.shape, ys, xs, np.array([radius, 0.55 * radius, 0.5 * radius]), 1.0)
    return (blob + 0.06) * view.cytoplasm


def _cytosol(view: View, rng: np.random.Generator) -> np.ndarray:
    return np.clip(0.55 + 0.12 * view.texture2, 0, None) * view.cytoplasm


def _vesicles(view: View, rng: np.random.Generator) -> np.ndarray:
    cytoplasm = view.cytoplasm
    count = int(np.clip(cytoplasm.sum() / (100 * view.unit ** 2), 25, 250))
    ys, xs = points_in(cytoplasm, count, rng)
    return dots(view.shape, ys, xs, 1.2 * view.unit, rng.uniform(0.5, 1.0, len(ys))) * cytoplasm


def _negative(view: View, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(view.shape, np.float32)


# Indexed by class, in the order of hpasc.core.classes.CLASS_NAMES.
GREEN_PATTERNS: tuple[Pattern, ...] = (
    _nucleoplasm, _nuclear_membrane, _nucleoli, _fibrillar_centres, _speckles, _nuclear_bodies,
    _endoplasmic_reticulum, _golgi, _intermediate_filaments, _actin, _microtubule_pattern,
    _mitotic_spindle, _centrosome, _plasma_membrane, _mitochondria, _aggresome, _cytosol,
    _vesicles, _negative,
)
