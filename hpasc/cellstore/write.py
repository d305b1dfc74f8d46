"""Writing a cell dataset folder: one image's tiles and rows at a time, atomically
(:func:`write_image`), then the complete images' rows into the table (:func:`merge`)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from hpasc.cells.tile_spec import TileSpec
from hpasc.cellstore.layout import (CHUNK_SEPARATORS, FORMAT, IMAGE_META, IMAGES, MARKER, META, REQUIRED_COLUMNS, ROWS,
                                    TABLE, TILE_INDEX, TILES, VERSION, chunk_file, done_images, parse_table,
                                    read_image_meta, read_json, read_text)
from hpasc.cellstore.temporary import STALE_AFTER_S, clean_temporary, temporary_name, writer_info
from hpasc.core import atomic, locks
from hpasc.core.errors import InputError
from hpasc.core.images import CHANNELS

log = logging.getLogger(__name__)

# Chosen with bench/cell_store.py and bench/cutter.py on 512² cell tiles: byte shuffle is both
# smaller and faster to decode than bit-shuffle; zstd level 1 in 256 KiB blocks is about as small
# as level 4 in Blosc's automatic blocks (563 against 550 KiB per real tile, below the 578 of the
# best-compressed PNGs) and encodes 4.5x faster (3.3 against 15 ms per tile); lz4 is larger than PNG.
CODEC = {"name": "blosc", "cname": "zstd", "clevel": 1, "shuffle": "shuffle", "typesize": 2, "blocksize": 1 << 18}
_SHUFFLES = {"noshuffle": blosc.NOSHUFFLE, "shuffle": blosc.SHUFFLE, "bitshuffle": blosc.BITSHUFFLE}


def write_image(root: str | os.PathLike, image_id: str, tiles: np.ndarray, rows: pd.DataFrame,
                spec: TileSpec | None = None) -> None:
    """Store image ``image_id``: its tiles (N×4×S×S uint16) and rows (N, in tile order), and how
    the tiles were cut (``spec``, default: the default spec at the tiles' size; merged into
    ``store.json``).

    Atomic: the image appears complete under ``images/{image_id}`` or not at all; an existing
    image of that id is replaced. An image with no cells (N = 0) is valid and counts as done.
    Raises ValueError for arguments that break the contract (a programming error).
    """
    _check_image_id(image_id)
    _check_tiles(tiles)
    _check_rows(image_id, rows, len(tiles))
    spec = spec or TileSpec(int(tiles.shape[-1]))
    if spec.size != tiles.shape[-1]:
        raise ValueError(f"{tiles.shape[-1]} px tiles described by a {spec.size} px tile spec")
    images = Path(root) / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    temporary = images / temporary_name(image_id)
    temporary.mkdir()
    try:
        (temporary / MARKER).write_text(json.dumps(writer_info()) + "\n")
        _write_tile_array(temporary / TILES, tiles)
        rows.to_csv(temporary / ROWS, index=False, lineterminator="\n")
        meta = {"format": FORMAT, "version": VERSION, "image_id": image_id, "n_cells": len(tiles), "codec": CODEC,
                "columns": {str(c): _kind(rows[c]) for c in rows.columns}, "tile_spec": spec.to_dict()}
        (temporary / IMAGE_META).write_text(json.dumps(meta, indent=1) + "\n")
        _fsync_tree(temporary)
        # Unlinking the marker claims the folder: if merge's clean-up judged it abandoned and
        # removed it meanwhile, this fails and nothing half-written is renamed into place.
        (temporary / MARKER).unlink()
        _install(temporary, images / image_id)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def check_cut(root: str | os.PathLike, spec: TileSpec) -> None:
    """Refuse (InputError) to add tiles cut per ``spec`` to a dataset that holds tiles cut another
    way or at another size: a model trained on the store must see every tile cut one way."""
    stored = _stored(Path(root))
    if stored is None:
        return
    mismatch = TileSpec.from_record(stored).mismatch(spec, size=True)
    if mismatch:
        raise InputError(f"{root} holds other tiles ({mismatch}): use another output folder or the same "
                         "--size/--mode/--context/--zero/--margin")


def _stored(root: Path) -> dict | None:
    """store.json's, else the first complete image's record (None for an empty folder)."""
    if (root / META).is_file():
        return read_json(root / META)
    ids = sorted(done_images(root))
    return read_image_meta(root, ids[0]) if ids else None


def _check_image_id(image_id: str) -> None:
    if not isinstance(image_id, str) or not image_id or image_id.startswith(".") \
            or any(c in image_id for c in "/\\\0") or len(image_id.encode()) > 180:
        raise ValueError(f"unusable image id {image_id!r} (empty, a leading '.', '/', '\\', NUL "
                         "or over 180 bytes)")


def _check_tiles(tiles: np.ndarray) -> None:
    if not isinstance(tiles, np.ndarray) or tiles.dtype != np.uint16 or tiles.ndim != 4 \
            or tiles.shape[1] != len(CHANNELS) or tiles.shape[2] != tiles.shape[3] \
            or tiles.shape[2] < 1:
        shape = getattr(tiles, "shape", None)
        raise ValueError(f"tiles must be a uint16 array (N, 4, S, S), got "
                         f"{getattr(tiles, 'dtype', type(tiles).__name__)} {shape}")


def _check_rows(image_id: str, rows: pd.DataFrame, count: int) -> None:
    if not isinstance(rows, pd.DataFrame):
        raise ValueError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    if len(rows) != count:
        raise ValueError(f"{image_id}: {len(rows)} rows for {count} tiles")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing or TILE_INDEX in rows.columns or not rows.columns.is_unique \
            or not all(isinstance(c, str) and c and "\n" not in c for c in rows.columns):
        raise ValueError(f"{image_id}: rows need unique string columns including "
                         f"{', '.join(REQUIRED_COLUMNS)} and not {TILE_INDEX} "
                         f"(missing {missing}, got {list(rows.columns)})")
    if count == 0:
        return
    if not (rows["image_id"] == image_id).all():
        raise ValueError(f"{image_id}: rows name other image ids {sorted(set(rows['image_id']))[:3]}")
    if not pd.api.types.is_integer_dtype(rows["mask_id"]):
        raise ValueError(f"{image_id}: mask_id must be integers, got {rows['mask_id'].dtype}")
    cell_ids = rows["cell_id"]
    if not cell_ids.is_unique or not all(isinstance(c, str) and c and "/" not in c
                                         and "\0" not in c for c in cell_ids):
        raise ValueError(f"{image_id}: cell ids must be unique non-empty strings without '/'")


def _kind(column: pd.Series) -> str:
    """How a column reads back from CSV: bool, int, float or str (anything else)."""
    if pd.api.types.is_bool_dtype(column):
        return "bool"
    if pd.api.types.is_integer_dtype(column):
        return "int"
    if pd.api.types.is_float_dtype(column):
        return "float"
    return "str"


def _write_tile_array(path: Path, tiles: np.ndarray) -> None:
    """The zarr v3 array of ``tiles``: its metadata through zarr, each chunk compressed and written
    here (zarr's own chunk writing costs 1-2 ms per tile on top of the compression)."""
    size = tiles.shape[-1]
    codec = {k: v for k, v in CODEC.items() if k != "name"}
    zarr.create_array(
        LocalStore(path), shape=tiles.shape, dtype="uint16", chunks=(1, len(CHANNELS), size, size),
        serializer=BytesCodec(endian="little"), compressors=BloscCodec(**codec), fill_value=0,
        chunk_key_encoding={"name": "default", "separator": CHUNK_SEPARATORS[0]}, zarr_format=3,
        dimension_names=("cell", "channel", "y", "x"), attributes={"channels": list(CHANNELS)},
    )
    little = tiles.astype("<u2", copy=False)
    for index, tile in enumerate(little):  # every tile gets its file, zeros too: a missing one is damage
        chunk_file(path, index).write_bytes(blosc.compress(
            np.ascontiguousarray(tile), codec["cname"].encode(), codec["clevel"], _SHUFFLES[codec["shuffle"]],
            codec["blocksize"]))


def _fsync_tree(folder: Path) -> None:
    """Flush every file and folder below ``folder`` so a machine crash after the rename cannot
    leave a complete-looking image with empty files."""
    for directory, _, files in os.walk(folder):
        for name in [*files, "."]:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _install(temporary: Path, final: Path) -> None:
    """Rename ``temporary`` to ``final``, moving an existing ``final`` aside first."""
    for _ in range(5):
        try:
            os.rename(temporary, final)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = final.parent / temporary_name(final.name)
        try:
            os.rename(final, old)
        except FileNotFoundError:
            continue  # another writer of the same image moved it aside first
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"could not replace {final}: other processes keep writing the same image")


# ---------------------------------------------------------------------------------------------
# Merging


def merge(root: str | os.PathLike, stale_after: float = STALE_AFTER_S) -> pd.DataFrame:
    """Write ``cells.csv`` and ``store.json`` for every complete image in ``root``; return the table.

    Removes temporary folders whose writer is gone (see :func:`abandoned`): folders of writers
    that are still running, here or on other machines, are left alone. Copies no tile. Merges
    take turns (a lock on ``root``): shards finishing together each list the complete images
    and write the table as one step, so the last table written lists every image.
    """
    with locks.exclusive(root, "another merge of this dataset"):
        return _merge(Path(root), stale_after)


def _merge(root: Path, stale_after: float) -> pd.DataFrame:
    for path in clean_temporary(root, stale_after):
        log.info("removed the abandoned temporary folder %s", path)
    ids = sorted(done_images(root))
    if not ids:
        raise InputError(f"{root}: no complete images in {root / IMAGES} to merge")
    metas = [read_image_meta(root, i) for i in ids]
    specs = [TileSpec.from_record(m) for m in metas]
    mismatch = next(filter(None, (specs[0].mismatch(s, size=True) for s in specs[1:])), None)
    if mismatch:
        raise InputError(f"{root}: images were cut differently ({mismatch})")
    kinds = _merged_kinds(metas)
    header, bodies = None, []
    for image_id in ids:
        text = read_text(root / IMAGES / image_id / ROWS)
        first, _, body = text.partition("\n")
        if body and not body.endswith("\n"):
            body += "\n"
        if header is None:
            header = first
        elif first != header:
            raise InputError(f"{root}: image {image_id} has columns {first} but {ids[0]} has "
                             f"{header}; cut them again with one version")
        bodies.append(body)
    table = parse_table(header + "\n" + "".join(bodies), kinds, root / IMAGES)
    counts = np.array([m["n_cells"] for m in metas])
    if len(table) != counts.sum():
        raise InputError(f"{root}: the images' rows.csv hold {len(table)} rows, their tiles "
                         f"{counts.sum()}")
    table[TILE_INDEX] = np.arange(len(table)) - np.repeat(np.cumsum(counts) - counts, counts)
    table = table.sort_values(["image_id", "mask_id"], kind="stable").reset_index(drop=True)
    duplicated = table["cell_id"][table["cell_id"].duplicated()]
    if len(duplicated):
        raise InputError(f"{root}: cell id {duplicated.iloc[0]} occurs more than once")
    meta = {"format": FORMAT, "version": VERSION, "channels": list(CHANNELS), "dtype": "uint16", "codec": CODEC,
            "chunks": "images/{image_id}/tiles/c.{tile_index}.0.0.0, one tile each (c/{tile_index}/0/0/0 in "
                      "images cut before 2026-11-24)",
            "columns": {**kinds, TILE_INDEX: "int"}, "n_cells": len(table),
            "images": {m["image_id"]: m["n_cells"] for m in metas}, "tile_spec": specs[0].to_dict()}
    atomic.write_text(root / TABLE, table.to_csv(index=False, lineterminator="\n"))
    atomic.write_text(root / META, json.dumps(meta, indent=1) + "\n")
    return table


def _merged_kinds(metas: list[dict]) -> dict[str, str]:
    """Each column's kind over all images; empty images (all-'str' columns) do not vote."""
    columns = metas[0]["columns"]
    voters = [m for m in metas if m["n_cells"]] or metas[:1]
    kinds = {}
    for name in columns:
        seen = {m["columns"].get(name, "str") for m in voters}
        kinds[name] = seen.pop() if len(seen) == 1 else "float" if seen <= {"int", "float"} else "str"
    return kinds
