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

import json
import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc.core import atomic, images, runtime
from hpasc.core.classes import format_labels
from hpasc.core.errors import InputError
from hpasc.tools.synthetic.acquisition import acquire
from hpasc.tools.synthetic.draw import smooth_noise
from hpasc.tools.synthetic.image_labels import MITOSIS_COMPATIBLE, cell_labels, check_classes, choose_classes, mitotic_labels
from hpasc.tools.synthetic.layout import nucleus_masks, plan_cells, rasterise
from hpasc.tools.synthetic.render import render

__all__ = ["CELL_COUNT", "MAX_SIZE", "MIN_SIZE", "MITOSIS_COMPATIBLE", "SyntheticImage",
           "generate_dataset", "image_id", "synthesize_image"]

log = logging.getLogger(__name__)

MIN_SIZE = 128
MAX_SIZE = 16384
RECORD = "synthetic.json"
"""The settings a dataset was made with, written last."""
CELL_COUNT = (10, 40)

_ID_NAMESPACE = uuid.UUID("6f1c2b52-3a1e-4d8e-9c57-2f0b8e61a4d3")


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
    chosen = choose_classes(rng) if classes is None else check_classes(classes)
    dividing = mitotic_labels(chosen, rng)
    count = int(rng.integers(CELL_COUNT[0], CELL_COUNT[1] + 1))
    plan = plan_cells(height, width, count, len(dividing), rng)
    unit = math.sqrt(height * width) / 1024
    wobble = smooth_noise((height, width), 14 * unit, rng)
    cells, locals_ = rasterise(plan, height, width, wobble)
    nuclei = nucleus_masks(cells, locals_)
    labels = cell_labels(plan, chosen, dividing, rng)
    planes = render(plan, locals_, cells, labels, unit, rng)
    image = acquire(planes, cells, unit, rng)
    return SyntheticImage(image=image, cells=cells, nuclei=nuclei, labels=labels)


def generate_dataset(out: Path, n: int, size: tuple[int, int], seed: int,
                     options: runtime.CommonOptions) -> list[str]:
    """Write ``n`` images with their truth to ``out`` (see the package docstring); return the IDs."""
    if n < 1:
        raise ValueError(f"need at least one image, got n={n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    record = {"count": n, "size": list(size), "seed": seed}
    if not options.overwrite and _made_before(out, record):
        log.info("%s: %d synthetic images of this count, size and seed made before, kept (--overwrite makes "
                 "them again)", out, n)
        return [image_id(seed, index) for index in range(n)]
    (out / RECORD).unlink(missing_ok=True)  # a run cut short leaves no record that vouches for it
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
    atomic.write_text(out / RECORD, json.dumps(record) + "\n")
    log.info("wrote %d synthetic images to %s", len(ids), out)
    return ids


def _made_before(out: Path, record: dict) -> bool:
    """Whether ``out`` holds a whole dataset made with ``record``'s settings: images are a pure
    function of them, so making them again would write the same bytes."""
    try:
        if json.loads((out / RECORD).read_text()) != record:
            return False
    except (OSError, ValueError):
        return False
    names = [image_id(record["seed"], index) for index in range(record["count"])]
    needed = [out / "train.csv", out / "truth" / "cells.csv"]
    needed += [out / f"{name}_{channel}.png" for name in names for channel in images.CHANNELS]
    needed += [out / "truth" / folder / f"{name}.png" for name in names for folder in ("", "nuclei")]
    return all(path.is_file() for path in needed)
