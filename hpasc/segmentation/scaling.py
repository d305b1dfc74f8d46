"""HPA's input scaling for its segmentation networks and the restoring of their output.

The computation follows HPA's ``pred_nuclei``/``pred_cells``: channels scaled to [0, 1]
(``img_as_float``), ``skimage.transform.rescale`` by 0.25 (anti-aliased, bilinear), normalised with
HPA's mean/std, softmax, the background channel zeroed, resized back with ``INTER_AREA`` and
converted to uint8 (nuclei before the resize, cells after, as HPA does). Where HPA goes wrong we do
not follow it: a non-square image keeps its orientation (HPA passes ``(rows, cols)`` to
``cv2.resize`` and so transposes it), and 16-bit data recorded at a lower bit depth is stretched
to the full range first (see :func:`stretch_bit_depth`). The rescale runs in float32 instead of
float64 (differences below 1e-7, far under the network's own float32 precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage import transform, util

SCALE = 0.25
# The U-Net halves the resolution five times, so its input sides must be multiples of 32.
MULTIPLE = 32
RED, BLUE, YELLOW = 0, 2, 3  # channel indices of an (H, W, 4) R, G, B, Y image


@dataclass(frozen=True)
class Geometry:
    """How an image was scaled and padded for the networks, to undo it on their output."""

    shape: tuple[int, int]
    scaled_shape: tuple[int, int]
    padded: bool


@dataclass(frozen=True)
class NetworkInput:
    """One image prepared for both networks (float32, 3×h×w each, not yet normalised)."""

    nuclei: np.ndarray
    cells: np.ndarray
    geometry: Geometry


def stretch_bit_depth(image: np.ndarray) -> np.ndarray:
    """Scale uint16 data recorded with fewer than 16 bits up to the full 16-bit range.

    The networks were trained on 8-bit HPA images seen as [0, 1]; a 12-bit camera image stored in
    16 bits would look nearly black as x / 65535. The factor is a power of two found from the
    image's maximum (the smallest bit depth that holds it, 8 bits at least), applied to all
    channels alike so their relative brightness is kept. 8-bit data (×257) and full-range 16-bit
    data are left as they are.
    """
    peak = int(image.max())
    bits = max(8, peak.bit_length())
    if bits >= 16 or (peak and np.all(image % 257 == 0)):
        return image
    return image * np.uint16(1 << (16 - bits))


def prepare(image: np.ndarray) -> NetworkInput:
    """uint16 H×W×4 (R, G, B, Y) → the nuclei input (blue ×3) and cell input (red, yellow, blue)."""
    height, width = image.shape[:2]
    planes = stretch_bit_depth(image)[..., [RED, YELLOW, BLUE]].astype(np.float32) / 65535
    scaled = transform.rescale(planes, SCALE, channel_axis=-1).astype(np.float32)
    scaled_shape = scaled.shape[:2]
    padded = any(side % MULTIPLE for side in scaled_shape)
    if padded:
        # HPA's padding=True layout: 32 px on top/left, 32 - side % 32 on bottom/right, mirrored.
        rows, cols = scaled_shape
        scaled = cv2.copyMakeBorder(scaled, MULTIPLE, MULTIPLE - rows % MULTIPLE, MULTIPLE,
                                    MULTIPLE - cols % MULTIPLE, cv2.BORDER_REFLECT)
    cells = np.ascontiguousarray(scaled.transpose(2, 0, 1))
    nuclei = np.repeat(cells[2:3], 3, axis=0)
    return NetworkInput(nuclei, cells, Geometry((height, width), scaled_shape, padded))


def restore(probabilities: np.ndarray, geometry: Geometry, ubyte_first: bool) -> np.ndarray:
    """A network's softmax output (3×h×w float) → HPA's uint8 H×W×3 at the image's full size."""
    prediction = probabilities.transpose(1, 2, 0)
    if geometry.padded:
        rows, cols = geometry.scaled_shape
        prediction = prediction[MULTIPLE:MULTIPLE + rows, MULTIPLE:MULTIPLE + cols]
    prediction = np.array(prediction, dtype=np.float32)
    prediction[..., 0] = 0
    if ubyte_first:
        prediction = _as_ubyte(prediction)
    height, width = geometry.shape
    prediction = cv2.resize(prediction, (width, height), interpolation=cv2.INTER_AREA)
    return prediction if ubyte_first else _as_ubyte(prediction)


def _as_ubyte(probabilities: np.ndarray) -> np.ndarray:
    # float32 sums can land a hair above 1.0, which img_as_ubyte refuses; the clip changes nothing
    # else (it maps to 255 either way).
    return util.img_as_ubyte(np.clip(probabilities, 0, 1))


def restore_both(nuclei: np.ndarray, cells: np.ndarray,
                 geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Both networks' outputs as HPA's uint8 H×W×3 predictions (nuclei, cells)."""
    return restore(nuclei, geometry, ubyte_first=True), restore(cells, geometry, ubyte_first=False)
