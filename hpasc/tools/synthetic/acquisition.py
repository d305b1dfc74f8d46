"""The microscope: blur, a few bright debris specks, uneven illumination, a background offset
and camera noise turn the noise-free planes into a 16-bit image."""

from __future__ import annotations

import math

import cv2
import numpy as np

from hpasc.tools.synthetic.draw import discs, normal


def acquire(planes: np.ndarray, cells: np.ndarray, unit: float,
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
        spread *= normal((height, width), rng)
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
        blob = discs(shape, ys - rows.start, xs - cols.start,
                     radius * rng.uniform(0.4, 0.7, lobes), 1.0)
        brightness = rng.uniform(0.1, 0.6, (4, 1, 1)).astype(np.float32)
        brightness[rng.choice(4, 2, replace=False)] = rng.uniform(1.0, 1.6, (2, 1, 1))
        np.maximum(planes[:, rows, cols], blob * brightness, out=planes[:, rows, cols])
