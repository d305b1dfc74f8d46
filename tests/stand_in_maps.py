"""Stand-ins for the segmentation networks' output: HPA-format prediction maps made from known
masks, so that ``label_cell`` can be tested and timed (bench/) without the networks or their
weights. Test and benchmark code only: the library never makes such maps."""

from __future__ import annotations

import cv2
import numpy as np

from hpasc.segmentation.labelling import interior


def predictions_from_masks(cells: np.ndarray, nuclei: np.ndarray, rng: np.random.Generator, *,
                           blur: float = 3.0, noise: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Softmax-like ``(nuclei_pred, cell_pred)`` maps, as HPA's networks would give for known masks.

    A synthetic stand-in for the DPN-UNet outputs, for tests and benchmarks: uint8 H×W×3, channel
    0 zeroed (as HPA's predictor does), 1 = border (a band inside each object's outline, about 4 px
    for nuclei and 8 px for cells), 2 = interior rising from the border to the object's centre;
    class scores blurred by ``blur`` px, with smooth and per-pixel noise of scale ``noise``.
    """
    if cells.shape != nuclei.shape or cells.ndim != 2:
        raise ValueError(f"cells {cells.shape} and nuclei {nuclei.shape} must be equal 2-D shapes")
    return (_softmax_map(nuclei, 4, blur, noise, rng), _softmax_map(cells, 8, blur, noise, rng))


def nuclei_from_blue(cells: np.ndarray, blue: np.ndarray, smoothing: float = 2.0) -> np.ndarray:
    """Nucleus labels for an image whose cell labels are known but not its nuclei: the Otsu-bright
    part of its nucleus (blue) channel inside each cell, each pixel carrying its cell's id.

    The channel is smoothed by a Gaussian of ``smoothing`` px first, as a nucleus network's output
    is smooth: thresholded raw, the real samples' DNA texture leaves 360-2,800 specks per 2048² image
    where a network would see 10-40 nuclei.
    """
    if smoothing > 0:
        blue = cv2.GaussianBlur(blue, (0, 0), smoothing)
    level, _ = cv2.threshold(blue, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return np.where(blue > level, cells, 0)


def _softmax_map(labels: np.ndarray, band: int, blur: float, noise: float,
                 rng: np.random.Generator) -> np.ndarray:
    height, width = labels.shape
    labels = labels.astype(np.int32, copy=False)
    inside = labels > 0
    edge = inside & ~interior(labels)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (band, band))
    edge = cv2.dilate(edge.view(np.uint8), kernel).view(bool) & inside
    depth = cv2.distanceTransform((inside & ~edge).view(np.uint8), cv2.DIST_L2, 3)
    scores = np.empty((3, height, width), np.float32)
    scores[0] = ~inside
    scores[1] = edge
    scores[2] = np.minimum(depth / (2 * band), 1) + (depth > 0)
    size = 2 * int(np.ceil(3 * blur)) + 1
    for plane in scores:
        cv2.GaussianBlur(plane, (size, size), blur, dst=plane)
        plane *= 6
        coarse = rng.standard_normal((height // 64 + 2, width // 64 + 2)).astype(np.float32)
        plane += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * (2 * noise)
        plane += rng.standard_normal((height, width), dtype=np.float32) * noise
    scores -= scores.max(axis=0)
    np.exp(scores, out=scores)
    scores *= 255 / scores.sum(axis=0)
    pred = np.moveaxis(np.rint(scores), 0, -1).astype(np.uint8)
    pred[..., 0] = 0
    return pred


def network_sized_maps(cells: np.ndarray, nuclei: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in maps as the networks themselves give them: float32 softmax, 3×h×w at the
    network's input size ``shape`` (what ``scaling.restore`` turns back into full-size maps)."""
    height, width = shape
    return tuple(cv2.resize(m, (width, height), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                 .astype(np.float32) / 255
                 for m in predictions_from_masks(cells, nuclei, np.random.default_rng(0)))
