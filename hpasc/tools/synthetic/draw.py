"""Drawing primitives of the synthetic images: fast normal noise, smooth noise and the textures
made from it, random points on a mask, and discs, ellipses, polylines and Gaussian dots drawn with
sub-pixel precision into float32 canvases."""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.special import ndtri

_SHIFT = 4  # fractional bits of the coordinates handed to OpenCV's drawing functions
_ONE = 1 << _SHIFT
# Standard normal quantiles of the 65536 equally likely 16-bit values: indexing this table with
# random bytes gives normal noise several times faster than Generator.standard_normal.
_NORMAL_QUANTILES = ndtri((np.arange(1 << 16) + 0.5) / (1 << 16)).astype(np.float32)


Numbers = np.ndarray | float


def textures(shape: tuple[int, int], unit: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fine texture (mean 0, sd 1) and a reticular network (0..1) from one white noise."""
    noise = normal(shape, rng)
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


def smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise (sd about 1) varying over about ``scale`` pixels."""
    small = (max(2, round(shape[0] / scale)) + 1, max(2, round(shape[1] / scale)) + 1)
    grid = normal(small, rng)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def normal(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Standard normal float32 noise (tails cut at 4.3 sd)."""
    count = shape[0] * shape[1]
    index = np.frombuffer(rng.bytes(2 * count), np.uint16).reshape(shape)
    return np.take(_NORMAL_QUANTILES, index)


def points_in(mask: np.ndarray, count: int, rng: np.random.Generator,
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


def discs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radii: np.ndarray,
          values: Numbers) -> np.ndarray:
    """Filled circles of radii ``radii`` (at least one pixel) and value ``values``."""
    canvas = np.zeros(shape, np.float32)
    for y, x, r, v in zip(_fixed(ys), _fixed(xs), _fixed(radii), np.broadcast_to(values, len(ys))):
        cv2.circle(canvas, (int(x), int(y)), max(int(r), _ONE), float(v), -1, cv2.LINE_8, _SHIFT)
    return canvas


def blobs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, axes: np.ndarray,
          angles: np.ndarray, values: Numbers) -> np.ndarray:
    """Filled ellipses; ``axes`` is an N×2 array of semi-axes, ``angles`` in degrees."""
    canvas = np.zeros(shape, np.float32)
    for y, x, (a, b), angle, v in zip(_fixed(ys), _fixed(xs), np.maximum(_fixed(axes), _ONE),
                                      angles, np.broadcast_to(values, len(ys))):
        cv2.ellipse(canvas, (int(x), int(y)), (int(a), int(b)), float(angle), 0, 360, float(v),
                    -1, cv2.LINE_8, _SHIFT)
    return canvas


def lines(shape: tuple[int, int], paths: np.ndarray, thickness: float,
          value: float = 1.0) -> np.ndarray:
    """Polylines given as a K×N×2 array: K paths of N (x, y) points in box coordinates."""
    canvas = np.zeros(shape, np.float32)
    draw_lines(canvas, paths, thickness, value)
    return canvas


def draw_lines(canvas: np.ndarray, paths: np.ndarray, thickness: float, value: float) -> None:
    """Draw :func:`lines` onto ``canvas`` in place, overwriting what lies under them."""
    if len(paths):
        cv2.polylines(canvas, list(_fixed(paths)), False, float(value),
                      max(1, round(thickness)), cv2.LINE_8, _SHIFT)


def dots(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, sigma: float,
         values: Numbers) -> np.ndarray:
    """Gaussian spots of peak ``values``: impulses blurred once, however many there are."""
    canvas = np.zeros(shape, np.float32)
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    keep = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    np.add.at(canvas, (iy[keep], ix[keep]), np.broadcast_to(values, len(ys))[keep])
    sigma = max(0.6, sigma)
    blurred = cv2.GaussianBlur(canvas, (0, 0), sigma)
    return blurred * np.float32(2 * math.pi * sigma * sigma)
