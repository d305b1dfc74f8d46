"""Check a submission.csv before uploading it.

``hpasc-check-submission submission.csv [--images DIR] [--sample-submission CSV]`` checks:

- the columns are exactly ``ID,ImageWidth,ImageHeight,PredictionString`` and no ID repeats;
- widths and heights are positive and, with ``--images``, equal to the images' sizes (read from the
  header of one channel file per image); every image of the folder has a row and vice versa;
- every PredictionString is ``class confidence mask`` triplets with a class in 0..18 and a
  confidence in [0, 1];
- every mask is a valid competition string for the row's size (it decodes to exactly W·H pixels)
  and not empty;
- a cell is a distinct mask string: each cell has every class exactly once, and the cells of an
  image do not overlap (two overlapping masks with IoU >= 0.5 are most likely one cell whose
  triplets carry differing strings). Problems name a cell by its number in order of appearance
  and the number of its first triplet in the PredictionString;
- with ``--sample-submission``, the IDs are the sample's, in its order.

It prints the problems (the first 20, then how many more) and a summary line, and exits 0 when the
submission is valid, 1 when not, 2 when a file cannot be read at all. :func:`check_submission` is
the same check for a table in memory (infer.py runs it on its own output).

Masks are checked in their run-length form with pycocotools (area, IoU), so no mask is decoded to
a full-size image; :func:`hpasc.submission.rle.text_to_rle` has verified that each decodes exactly.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask

from hpasc.core import runtime
from hpasc.core.classes import NUM_CLASSES
from hpasc.core.image_folder import scan_images
from hpasc.core.multichannel import ChannelOrder
from hpasc.submission.rle import text_to_rle
from hpasc.submission.rows import COLUMNS, parse_prediction_string, read_sample_submission, read_submission

MAX_PRINTED = 20
# Two masks overlapping this much are more likely one cell than two.
SAME_CELL_IOU = 0.5
ImageSize = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class CheckResult:
    problems: list[str]
    images: int
    cells: int


def check_submission(submission: pd.DataFrame, image_sizes: Mapping[str, ImageSize] | None = None,
                     order: Sequence[str] | None = None,
                     options: runtime.CommonOptions | None = None) -> list[str]:
    """The problems of a submission table (:func:`hpasc.submission.read_submission`), [] if valid.

    ``image_sizes``: image ID → (width, height) of the images it must cover; ``order``: the IDs
    of the sample submission, in order.
    """
    return check(submission, image_sizes, order, options).problems


def check(submission: pd.DataFrame, image_sizes: Mapping[str, ImageSize] | None = None,
          order: Sequence[str] | None = None, options: runtime.CommonOptions | None = None) -> CheckResult:
    """:func:`check_submission` with the number of images and cells checked."""
    problems = []
    if list(submission.columns) != list(COLUMNS):
        problems.append(f"columns are {','.join(map(str, submission.columns))}, "
                        f"expected {','.join(COLUMNS)}")
    ids = submission["ID"].tolist()
    problems += [f"image {i} has {n} rows" for i, n in Counter(ids).items() if n > 1]
    if image_sizes is not None:
        problems += _coverage(ids, image_sizes, "the image folder")
    if order is not None:
        problems += _order(ids, list(order))
    cells = 0
    bar = (options or runtime.CommonOptions(progress=False)).bar
    for line, row in bar(enumerate(submission.to_dict("records"), start=2), total=len(submission),
                         desc="submission rows", unit="image"):
        size = None if image_sizes is None else image_sizes.get(row["ID"])
        row_problems, row_cells = _check_row(row, size)
        problems += [f"line {line} ({row['ID']}): {p}" for p in row_problems]
        cells += row_cells
    return CheckResult(problems, len(submission), cells)


def _coverage(ids: list[str], expected: Collection[str], source: str) -> list[str]:
    listed, known = set(ids), set(expected)
    extra = [i for i in ids if i not in known]
    missing = [i for i in expected if i not in listed]
    problems = []
    if extra:
        problems.append(f"{len(extra)} image(s) not in {source}, first {extra[0]}")
    if missing:
        problems.append(f"{len(missing)} image(s) of {source} without a row, first {missing[0]}")
    return problems


def _order(ids: list[str], order: list[str]) -> list[str]:
    problems = _coverage(ids, order, "the sample submission")
    # Repeated rows are reported on their own; the order is only compared between equal lists.
    if not problems and len(ids) == len(order) and ids != order:
        line = next(k for k, (a, b) in enumerate(zip(ids, order)) if a != b)
        problems.append(f"rows are not in the sample submission's order: line {line + 2} is "
                        f"{ids[line]}, expected {order[line]}")
    return problems


def _check_row(row: dict, size: ImageSize | None) -> tuple[list[str], int]:
    """(problems, number of cells) of one row."""
    width, height = int(row["ImageWidth"]), int(row["ImageHeight"])
    if width < 1 or height < 1:
        return [f"image size {width}x{height} is not positive"], 0
    problems = []
    if size is not None and (width, height) != tuple(size):
        problems.append(f"size {width}x{height} differs from the image's {size[0]}x{size[1]}")
    try:
        triplets = parse_prediction_string(row["PredictionString"])
    except ValueError as exc:
        return [*problems, f"PredictionString: {exc}"], 0
    outside = [(k, c, s) for k, (c, s, _) in enumerate(triplets, start=1) if not 0 <= s <= 1]
    if outside:
        triplet, klass, score = outside[0]
        problems.append(f"{len(outside)} confidence(s) outside [0, 1], first {score:g} "
                        f"(triplet {triplet}, class {klass})")
    first: dict[str, int] = {}
    classes: dict[str, Counter] = {}
    for triplet, (klass, _, mask) in enumerate(triplets, start=1):
        first.setdefault(mask, triplet)
        classes.setdefault(mask, Counter())[klass] += 1
    # Named by number and first triplet: findable in a string of thousands of triplets.
    names = [f"cell {n} (triplet {t})" for n, t in enumerate(first.values(), start=1)]
    for name, counts in zip(names, classes.values()):
        problems += _class_problems(name, counts)
    return problems + _mask_problems(list(first), names, width, height), len(first)


def _class_problems(name: str, counts: Counter) -> list[str]:
    problems = []
    missing = [c for c in range(NUM_CLASSES) if c not in counts]
    if missing:
        problems.append(f"{name} has no triplet for class(es) {_spans(missing)}")
    problems += [f"{name} has class {c} {n} times" for c, n in sorted(counts.items()) if n > 1]
    return problems


def _spans(values: list[int]) -> str:
    """Sorted integers as ``1-5, 8``: a cell lacking 18 classes should not fill the screen."""
    spans: list[list[int]] = []
    for value in values:
        if spans and value == spans[-1][1] + 1:
            spans[-1][1] = value
        else:
            spans.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _mask_problems(masks: list[str], names: list[str], width: int, height: int) -> list[str]:
    """Malformed and empty masks, and overlapping cells."""
    problems = []
    valid: dict[str, dict] = {}
    for name, text in zip(names, masks):
        try:
            valid[name] = text_to_rle(text, height, width)
        except ValueError as exc:
            problems.append(f"{name}: mask is not a valid {width}x{height} RLE ({exc})")
    if not valid:
        return problems
    valid_names, rles = list(valid), list(valid.values())
    areas = coco_mask.area(rles)
    problems += [f"{name} has an empty mask" for name, area in zip(valid_names, areas) if area == 0]
    iou = coco_mask.iou(rles, rles, [0] * len(rles))
    for a, b in zip(*np.nonzero(np.triu(iou, k=1) > 0)):
        hint = ": one cell with differing mask strings?" if iou[a, b] >= SAME_CELL_IOU else ""
        problems.append(f"{valid_names[a]} and {valid_names[b]} overlap (IoU {iou[a, b]:.2f}){hint}")
    return problems


def read_image_sizes(folder: str | os.PathLike, channels: ChannelOrder | None = None) -> dict[str, ImageSize]:
    """Image ID → (width, height) of each usable image in ``folder``, from a file header (the whole
    file only for ``.gz``, which must be decompressed)."""
    found = scan_images(folder, channels)
    return {image_id: found.source(image_id).size() for image_id in found.ids}


def check_file(submission: Path, images: Path | None = None, channels: ChannelOrder | None = None,
               sample_submission: Path | None = None, options: runtime.CommonOptions | None = None) -> CheckResult:
    """:func:`check` of a submission file, against the sizes of the images of a folder (``channels``
    as :func:`read_image_sizes` takes them) and the IDs and order of a sample submission, if given."""
    sizes = None if images is None else read_image_sizes(images, channels)
    order = None if sample_submission is None else read_sample_submission(sample_submission).order
    return check(read_submission(submission), sizes, order, options)
