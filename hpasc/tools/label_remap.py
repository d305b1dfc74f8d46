"""Carry a label folder's cell ids from one segmentation to another (``hpasc-labels
remap``): a cell ``{ID}_{k}`` of the masks it was made on (mask id k + 1) becomes the cell of the
other masks it matches at IoU >= 0.6; ids without such a cell, or of images missing from either
mask folder, are dropped and counted. The output folder has the input's layout (SPEC files, or
the 4th place's sub-folders with their pickled sets) and the target masks' segmentation record."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hpasc.cells.provenance import read_provenance, write_provenance
from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.images import read_label_image
from hpasc.labels.files import label_lines, read_label_lines
from hpasc.labels.formats import label_format
from hpasc.labels.fourth_place import ANTIBODY_CLASS
from hpasc.labels.pickles import read_id_set
from hpasc.submission.matching import match_instances

log = logging.getLogger(__name__)
IOU = 0.6


@dataclass(frozen=True)
class MaskFolder:
    """``{folder}/{ID}{suffix}.png`` label images."""

    folder: Path
    suffix: str = ""

    def path(self, image_id: str) -> Path:
        return self.folder / f"{image_id}{self.suffix}.png"


class CellMap:
    """Cell id on ``source``'s masks → cell id on ``target``'s, image by image, computed once each."""

    def __init__(self, source: MaskFolder, target: MaskFolder) -> None:
        self.source, self.target = source, target
        self.images: dict[str, dict[int, int] | None] = {}
        self.counts: Counter = Counter()

    def _image(self, image_id: str) -> dict[int, int] | None:
        if image_id not in self.images:
            paths = (self.source.path(image_id), self.target.path(image_id))
            if not all(p.is_file() for p in paths):
                self.images[image_id] = None
            else:
                source, target = (read_label_image(p) for p in paths)
                if source.shape != target.shape:
                    raise InputError(f"{image_id}: {paths[0]} and {paths[1]} differ in size")
                self.images[image_id] = {a: b for a, b, _ in match_instances(source, target, IOU).pairs}
        return self.images[image_id]

    def __call__(self, cell_id: str) -> str | None:
        image_id, _, k = cell_id.rpartition("_")
        pairs = self._image(image_id) if k.isdigit() and image_id else None
        if pairs is None:
            self.counts["without masks"] += 1
            return None
        moved = pairs.get(int(k) + 1)
        self.counts["moved" if moved is not None else "dropped"] += 1
        return None if moved is None else f"{image_id}_{moved - 1}"


def _remap_lines(path: Path, out: Path, cell_map: CellMap) -> None:
    entries = [(cell_map(cell_id), value) for cell_id, value, _ in read_label_lines(path)]
    atomic.write_text(out, label_lines((cell_id, value) for cell_id, value in entries if cell_id is not None))


def _remap_set(path: Path, out: Path, cell_map: CellMap) -> None:
    moved = {cell_map(cell_id) for cell_id in sorted(read_id_set(path))} - {None}
    atomic.write_bytes(out, pickle.dumps(moved, protocol=4))  # a set of str: no global in the pickle


def remap_labels(labels: str | os.PathLike, source: MaskFolder, target: MaskFolder,
                 out: str | os.PathLike) -> Counter:
    """Write ``labels`` remapped into ``out``; counts of ids moved, dropped and without masks."""
    labels, out = Path(labels), Path(out)
    for folder in (labels, source.folder, target.folder):
        if not folder.is_dir():
            raise InputError(f"{folder} does not exist")
    if out.exists():
        raise InputError(f"{out} exists: choose a new output folder")
    cell_map = CellMap(source, target)
    temporary = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        for path, relative in label_format(labels).files(labels):
            _remap_file(path, temporary / relative, relative, cell_map)
        provenance = read_provenance(target.folder)
        if provenance is not None:
            write_provenance(temporary, provenance)
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return cell_map.counts


def _remap_file(path: Path, out: Path, relative: str, cell_map: CellMap) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if relative == f"relabel/{ANTIBODY_CLASS}.txt":  # image ids, not cells: valid on any masks
        shutil.copyfile(path, out)
    elif path.suffix == ".p":
        _remap_set(path, out, cell_map)
    elif path.suffix == ".txt":
        _remap_lines(path, out, cell_map)
