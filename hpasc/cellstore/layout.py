"""The names and formats of a cell dataset folder (see :mod:`hpasc.cellstore` for the layout):
its folders and files, when an image is complete, and the readers of its CSV and JSON files that
writing and reading share."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hpasc.core.errors import InputError

FORMAT, VERSION = "hpasc-cellstore", 1
IMAGES, TABLE, META = "images", "cells.csv", "store.json"
TILES, ROWS, IMAGE_META, MARKER = "tiles", "rows.csv", "image.json", ".writing"
REQUIRED_COLUMNS = ("cell_id", "image_id", "mask_id")
TILE_INDEX = "tile_index"


# Chunk keys are written with "." separators (``c.{k}.0.0.0``), so an image's tiles are files of
# one folder: "/" separators (``c/{k}/0/0/0``, images cut before 2026-11-24, still read) cost three
# folders per tile to create and flush, 40 ms per 2048² image on a local disk (bench/cutter.py).
CHUNK_SEPARATORS = (".", "/")


def chunk_file(tiles: Path, tile_index: int, separator: str = CHUNK_SEPARATORS[0]) -> Path:
    """The zarr v3 chunk file of tile ``tile_index`` in an image's ``tiles`` array (chunks of one
    tile, keys with ``separator``): written and read without zarr's API, whose per-chunk work
    costs more than a tile's compression."""
    return tiles / separator.join(("c", str(tile_index), "0", "0", "0"))


def is_temporary(name: str) -> bool:
    return name.startswith(".")


def image_done(root: str | os.PathLike, image_id: str) -> bool:
    """True when image ``image_id`` is complete in the dataset ``root``."""
    return not is_temporary(image_id) and (Path(root) / IMAGES / image_id).is_dir()


def done_images(root: str | os.PathLike) -> set[str]:
    """The ids of every complete image in the dataset ``root`` (merged into cells.csv or not)."""
    folder = Path(root) / IMAGES
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {e.name for e in entries if not is_temporary(e.name) and e.is_dir()}


def read_image_meta(root: Path, image_id: str) -> dict:
    path = root / IMAGES / image_id / IMAGE_META
    meta = read_json(path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{path}: not a version {VERSION} {FORMAT} image; cut it again")
    if meta.get("image_id") != image_id:
        raise InputError(f"{path}: describes image {meta.get('image_id')!r}, not {image_id!r}")
    return meta


def parse_table(text: str, kinds: dict[str, str], source: Path,
                required: Sequence[str] = ()) -> pd.DataFrame:
    """The cell table format (``cells.csv``, and each image's ``rows.csv``): its one parser.
    ``kinds`` types the columns it names (``store.json``'s "bool", "int", "float", "str"); every
    column of ``required`` must be there."""
    dtypes = {"bool": "bool", "int": "int64", "float": "float64", "str": "str"}
    try:
        table = pd.read_csv(io.StringIO(text), dtype={c: dtypes[k] for c, k in kinds.items()},
                            keep_default_na=False,
                            na_values={c: ["", "nan", "NaN"] for c, k in kinds.items() if k == "float"})
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{source}: unreadable cell table ({exc})".replace("\n", " ")) from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}")
    return table


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_json(path: Path) -> dict:
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a JSON object")
    return value
