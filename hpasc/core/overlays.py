"""Pictures a person checks by eye: an image's colour composite with its cells outlined (the
segmentation), or filled in the colour of each cell's top class (the predictions), at most
:data:`SIDE` px a side, and the index page that lists them.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from hpasc.core import atomic
from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES
from hpasc.core.errors import InputError
from hpasc.core.images import composite, write_png
from hpasc.core.weblinks import href

SIDE = 1024
OUTLINE = (255, 255, 255)
GREY = (128, 128, 128)
# A filled cell is its class colour shaded by the image's brightness, from SHADE_FLOOR (dark) to 1:
# its hue is the legend swatch's whatever the stain's colour (a 45 % blend over red made Golgi's
# orange read as the microtubules' red), and the stain's structure still shows.
SHADE_FLOOR = 0.45
# One colour per class (RGB), told apart at a glance: matplotlib's tab20 without its greys.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44), (152, 223, 138),
    (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213), (140, 86, 75), (196, 156, 148),
    (227, 119, 194), (247, 182, 210), (188, 189, 34), (219, 219, 141), (23, 190, 207), (158, 218, 229),
    (255, 255, 255))
LEGEND_WIDTH = 300
LEGEND_TEXT_X = 34
LEGEND_FONT, LEGEND_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.42





def save_figure(figure: Figure, path: Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically (no pyplot: no display, no global state)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def shrink(image: np.ndarray, mask: np.ndarray, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """An H×W×4 image and its H×W label image shrunk to at most ``side`` px a side (the mask by
    nearest neighbour, so that its labels stay labels and outlines stay one pixel wide)."""
    if mask.shape != image.shape[:2]:
        raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image {image.shape[1]}x{image.shape[0]}")
    scale = min(1.0, side / max(mask.shape))
    if scale < 1.0:
        size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return image, mask


def mask_overlay(image: np.ndarray, mask: np.ndarray, side: int = SIDE) -> np.ndarray:
    """The colour composite of an H×W×4 image with the outlines of its cells (RGB uint8)."""
    image, mask = shrink(image, mask, side)
    rgb = composite(image.transpose(2, 0, 1))
    rgb[find_boundaries(mask, mode="inner")] = OUTLINE
    return rgb


def prediction_overlay(rgb: np.ndarray, mask: np.ndarray, mask_ids: Sequence[int], top_class: Sequence[int],
                       top_confidence: Sequence[float], threshold: float) -> np.ndarray:
    """``rgb`` (a shrunk composite) with each cell of ``mask`` filled (shaded by the composite's
    brightness) and outlined in the colour of its top class, only outlined in grey when its
    confidence is below ``threshold``, and the class legend beside."""
    colours = np.zeros((int(mask.max(initial=0)) + 1, 3), np.float32)
    known = np.zeros(len(colours), bool)
    confident = np.zeros(len(colours), bool)
    for mask_id, klass, confidence in zip(mask_ids, top_class, top_confidence):
        if mask_id < len(colours):
            confident[mask_id] = confidence >= threshold
            colours[mask_id] = CLASS_COLOURS[klass] if confident[mask_id] else GREY
            known[mask_id] = True
    inside, filled = known[mask], confident[mask]
    out = rgb.astype(np.float32)
    # Only confident cells are filled: a dim Negative (white) fill would read as the grey of a cell
    # below the threshold, which keeps the image as it is, outlined in grey.
    brightness = out[filled].max(axis=1, keepdims=True) / 255
    out[filled] = colours[mask[filled]] * (SHADE_FLOOR + (1 - SHADE_FLOOR) * brightness)
    edges = find_boundaries(mask, mode="inner") & inside
    out[edges] = colours[mask[edges]]
    key = legend(rgb.shape[0])
    picture = np.zeros((key.shape[0], rgb.shape[1], 3), np.uint8)  # black below a short image
    picture[:rgb.shape[0]] = np.round(out).astype(np.uint8)
    return np.hstack([picture, key])


def legend(height: int) -> np.ndarray:
    """A black strip (``height`` px, or the legend's own height if taller) with a swatch and the
    whole name of every class, and a grey outline for low confidence; as wide as its longest name
    needs."""
    entries = [*zip(CLASS_COLOURS, (f"{k} {name}" for k, name in enumerate(CLASS_NAMES))),
               (GREY, "below the threshold")]
    widest = max(cv2.getTextSize(text, LEGEND_FONT, LEGEND_SCALE, 1)[0][0] for _, text in entries)
    strip = np.zeros((max(height, 24 * (NUM_CLASSES + 1) + 8), max(LEGEND_WIDTH, LEGEND_TEXT_X + widest + 8), 3),
                     np.uint8)
    for row, (colour, text) in enumerate(entries):
        y = 8 + 24 * row
        cv2.rectangle(strip, (8, y), (26, y + 16), colour, thickness=2 if colour == GREY else -1)  # GREY: not filled
        cv2.putText(strip, text, (LEGEND_TEXT_X, y + 13), LEGEND_FONT, LEGEND_SCALE, (235, 235, 235), 1, cv2.LINE_AA)
    return strip


@dataclass
class OverlayIndex:
    """The pictures written into ``folder`` and what index.html says of each."""

    folder: Path
    title: str
    entries: list[tuple[str, str, int, dict[int, int]]] = field(default_factory=list)
    """(image id, picture file, cells, cells per confident top class)."""

    def add(self, image_id: str, rgb: np.ndarray, cells: int, counts: dict[int, int] | None = None) -> None:
        name = f"{image_id}.png"
        write_png(self.folder / name, rgb)
        self.entries.append((image_id, name, cells, counts or {}))

    def write(self, figures: Sequence[tuple[str, str]] = ()) -> Path:
        """index.html: ``figures`` (caption, file) first, then one row per picture."""
        rows = "".join(
            f"<tr><td><a href=\"{href(name)}\">{html.escape(image_id)}</a></td><td>{cells}</td>"
            f"<td>{html.escape(', '.join(f'{CLASS_NAMES[k]} {n}' for k, n in sorted(counts.items())))}</td>"
            f"<td><a href=\"{href(name)}\"><img src=\"{href(name)}\" width=\"320\" alt=\"{html.escape(image_id)}\">"
            "</a></td></tr>" for image_id, name, cells, counts in self.entries)
        pictures = "".join(f"<figure><img src=\"{href(name)}\" alt=\"{html.escape(caption)}\">"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>" for caption, name in figures)
        page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
                "<style>body{font-family:sans-serif} td{padding:4px 8px;vertical-align:top} "
                "img{max-width:1000px}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>{pictures}<table><tr><th>image</th><th>cells</th>"
                f"<th>cells by confident top class</th><th>picture</th></tr>{rows}</table></body></html>\n")
        atomic.write_text(self.folder / "index.html", page)
        return self.folder / "index.html"
