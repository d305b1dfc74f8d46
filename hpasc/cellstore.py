"""The cell dataset folder: one table row and one (4, S, S) uint16 tile per cell.

Layout of a dataset folder ``ROOT`` (format version 1)::

    ROOT/store.json                   tile size, channels, dtype, codec, columns, merged images
    ROOT/cells.csv                    the merged table: every complete image's rows, sorted by
                                      image id then mask id, plus ``tile_index`` (see below)
    ROOT/images/{ID}/tiles/           a zarr v3 array (n_cells, 4, S, S) uint16, one chunk per
                                      tile (``tiles/c/{k}/0/0/0``), Blosc zstd with byte shuffle
    ROOT/images/{ID}/rows.csv         the image's rows, in the order of its tiles
    ROOT/images/{ID}/image.json       cell count, tile size, column kinds, codec, format version
    ROOT/images/.{ID}~{writer}~{pid}~{token}.tmp/   an image being written (ignored by readers)

One file per tile, not zarr's sharding codec (one file per image): through zarr, sharded reads
were 1.3× slower than unsharded ones and 2.2× slower than this module's reads, at the same size.

**Atomic per image.** :func:`write_image` writes an image under a temporary (dot) name in
``images/`` and renames it into place when complete: an image is complete exactly when
``images/{ID}`` exists. A crash leaves only a temporary folder, which every reader ignores,
:func:`merge` removes once its writer is gone, and a re-run replaces by writing the image anew.
Processes on one or many machines may write different images into one folder at once; nothing
but the rename touches a shared name. :func:`merge` collects the complete images' rows into
``cells.csv`` (atomically) without touching a tile, so shards that wrote into one folder and were
merged give the same dataset as one run.

**Reading.** :func:`open_cells` gives a :class:`CellStore`: ``len``, ``store[i]`` (the tile of
row ``i`` of ``store.table``), ``store.read(cell_id)``, ``store.tiles(indices)``. A tile is read
straight from its chunk file and decoded with Blosc, which is what zarr does, but without zarr's
per-call machinery and without opening a per-image array (zarr's API takes 1.7× as long per tile
with the array open, 2.4× when it must be opened first), so a random read over a large dataset
costs the same as one within an image and there is no per-image cache to keep. The store holds no
open files or handles: it pickles cheaply into DataLoader workers (fork or spawn).
:func:`open_tiles` opens an image's tiles as a zarr array for everything else.

``tile_index`` in ``cells.csv`` is the cell's position in its image's array, so the table may be
filtered or reordered by a user without losing its tiles.

Command line: ``python -m hpasc.cellstore export|merge --help``.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from hpasc import atomic, cli
from hpasc.errors import InputError
from hpasc.images import CHANNELS, write_png

log = logging.getLogger(__name__)

FORMAT, VERSION = "hpasc-cellstore", 1
IMAGES, TABLE, META = "images", "cells.csv", "store.json"
TILES, ROWS, IMAGE_META, MARKER = "tiles", "rows.csv", "image.json", ".writing"
REQUIRED_COLUMNS = ("cell_id", "image_id", "mask_id")
TILE_INDEX = "tile_index"
# Chosen with bench/cell_store.py on 512² cell tiles: byte shuffle is both smaller and faster to
# decode than bit-shuffle (zstd L5: 0.88 vs 0.97 of the PNG size, 957 vs 659 tiles/s on one core);
# level 4 is as small as 5-7 and encodes in 23 ms/tile (L5 29, L7 44); lz4 is larger than PNG.
CODEC = {"name": "blosc", "cname": "zstd", "clevel": 4, "shuffle": "shuffle", "typesize": 2}
# A temporary folder whose writer cannot be checked (another machine) counts as abandoned once
# nothing in it has changed for this long; one image takes seconds to write.
STALE_AFTER_S = 3600.0
_KINDS = ("bool", "int", "float", "str")
_BLOSC_HEADER = 16


# ---------------------------------------------------------------------------------------------
# Writing


def write_image(root: str | os.PathLike, image_id: str, tiles: np.ndarray, rows: pd.DataFrame) -> None:
    """Store image ``image_id``: its tiles (N×4×S×S uint16) and rows (N, in tile order).

    Atomic: the image appears complete under ``images/{image_id}`` or not at all; an existing
    image of that id is replaced. An image with no cells (N = 0) is valid and counts as done.
    Raises ValueError for arguments that break the contract (a programming error).
    """
    _check_image_id(image_id)
    _check_tiles(tiles)
    _check_rows(image_id, rows, len(tiles))
    images = Path(root) / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    temporary = images / _temporary_name(image_id)
    temporary.mkdir()
    try:
        (temporary / MARKER).write_text(json.dumps(_writer_info()) + "\n")
        _write_tile_array(temporary / TILES, tiles)
        rows.to_csv(temporary / ROWS, index=False, lineterminator="\n")
        meta = {"format": FORMAT, "version": VERSION, "image_id": image_id, "n_cells": len(tiles),
                "tile_size": int(tiles.shape[-1]), "codec": CODEC,
                "columns": {str(c): _kind(rows[c]) for c in rows.columns}}
        (temporary / IMAGE_META).write_text(json.dumps(meta, indent=1) + "\n")
        _fsync_tree(temporary)
        # Unlinking the marker claims the folder: if merge's clean-up judged it abandoned and
        # removed it meanwhile, this fails and nothing half-written is renamed into place.
        (temporary / MARKER).unlink()
        _install(temporary, images / image_id)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def image_done(root: str | os.PathLike, image_id: str) -> bool:
    """True when image ``image_id`` is complete in the dataset ``root``."""
    return not _is_temporary(image_id) and (Path(root) / IMAGES / image_id).is_dir()


def done_images(root: str | os.PathLike) -> set[str]:
    """The ids of every complete image in the dataset ``root`` (merged into cells.csv or not)."""
    folder = Path(root) / IMAGES
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {e.name for e in entries if not _is_temporary(e.name) and e.is_dir()}


def check_tile_size(root: str | os.PathLike, size: int) -> None:
    """Refuse (InputError) to add ``size`` px tiles to a dataset that holds tiles of another size."""
    stored = _stored_tile_size(Path(root))
    if stored is not None and stored != size:
        raise InputError(f"{root} holds {stored} px tiles, not {size} px: use another output "
                         "folder or the same tile size")


def open_tiles(root: str | os.PathLike, image_id: str) -> zarr.Array:
    """Image ``image_id``'s tiles as a read-only zarr array (n_cells, 4, S, S)."""
    path = Path(root) / IMAGES / image_id / TILES
    if not image_done(root, image_id):
        raise InputError(f"{root}: no complete image {image_id}")
    return zarr.open_array(LocalStore(path, read_only=True), mode="r")


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
    size = tiles.shape[-1]
    codec = {k: v for k, v in CODEC.items() if k != "name"}
    array = zarr.create_array(
        LocalStore(path), shape=tiles.shape, dtype="uint16", chunks=(1, len(CHANNELS), size, size),
        serializer=BytesCodec(endian="little"), compressors=BloscCodec(**codec), fill_value=0,
        chunk_key_encoding={"name": "default", "separator": "/"}, zarr_format=3,
        dimension_names=("cell", "channel", "y", "x"), attributes={"channels": list(CHANNELS)},
        # Every tile gets its file, zeros too, so that a missing chunk file means damage.
        config={"write_empty_chunks": True},
    )
    if len(tiles):
        array[:] = tiles


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
        old = final.parent / _temporary_name(final.name)
        try:
            os.rename(final, old)
        except FileNotFoundError:
            continue  # another writer of the same image moved it aside first
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"could not replace {final}: other processes keep writing the same image")


# ---------------------------------------------------------------------------------------------
# Temporary folders and their writers


def _is_temporary(name: str) -> bool:
    return name.startswith(".")


def _temporary_name(image_id: str) -> str:
    return f".{image_id}~{_writer_id()}~{os.getpid()}~{secrets.token_hex(4)}.tmp"


def _parse_temporary(name: str) -> tuple[str, int] | None:
    """(writer id, pid) of a temporary folder name, or None if it is not one of ours."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    parts = name[1:-4].rsplit("~", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


_WRITER_ID: str | None = None


def _writer_id() -> str:
    """Who may check a writer's pid: the same kernel boot (machine) and pid namespace (container).

    The host name alone is not enough: containers with the host's network share its name while
    their pids differ, and cluster nodes may all be called ``localhost``.
    """
    global _WRITER_ID
    if _WRITER_ID is None:
        parts = [socket.gethostname()]
        for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                     lambda: os.readlink("/proc/self/ns/pid")):
            try:
                parts.append(read())
            except OSError:
                parts.append("?")
        _WRITER_ID = hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]
    return _WRITER_ID


def _writer_info() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "writer": _writer_id(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _last_change(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for directory, _, files in os.walk(folder):
        for name in [*files, "."]:
            try:
                newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def abandoned(folder: Path, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether the temporary folder ``folder`` no longer has a live writer.

    Written on this machine (same boot and pid namespace): its writer process has exited.
    Otherwise (another machine, or a pid that may have been reused): nothing in it has changed
    for ``stale_after`` seconds.
    """
    parsed = _parse_temporary(folder.name)
    if parsed is not None and parsed[0] == _writer_id() and parsed[1] != os.getpid() \
            and not _pid_alive(parsed[1]):
        return True
    try:
        return time.time() - _last_change(folder) > stale_after
    except FileNotFoundError:
        return False  # renamed into place or removed meanwhile


def clean_temporary(root: str | os.PathLike, stale_after: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary folders in ``root/images`` whose writer is gone; returns them."""
    folder = Path(root) / IMAGES
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if _is_temporary(entry.name) and entry.is_dir() and abandoned(entry, stale_after):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# ---------------------------------------------------------------------------------------------
# Merging


def merge(root: str | os.PathLike, stale_after: float = STALE_AFTER_S) -> pd.DataFrame:
    """Write ``cells.csv`` and ``store.json`` for every complete image in ``root``; return the table.

    Removes temporary folders whose writer is gone (see :func:`abandoned`): folders of writers
    that are still running, here or on other machines, are left alone. Copies no tile.
    """
    root = Path(root)
    for path in clean_temporary(root, stale_after):
        log.info("removed the abandoned temporary folder %s", path)
    ids = sorted(done_images(root))
    if not ids:
        raise InputError(f"{root}: no complete images in {root / IMAGES} to merge")
    metas = [_read_image_meta(root, i) for i in ids]
    sizes = {m["tile_size"] for m in metas}
    if len(sizes) > 1:
        raise InputError(f"{root}: images have different tile sizes {sorted(sizes)}")
    kinds = _merged_kinds(metas)
    header, bodies = None, []
    for image_id in ids:
        text = _read_text(root / IMAGES / image_id / ROWS)
        first, _, body = text.partition("\n")
        if body and not body.endswith("\n"):
            body += "\n"
        if header is None:
            header = first
        elif first != header:
            raise InputError(f"{root}: image {image_id} has columns {first} but {ids[0]} has "
                             f"{header}; cut them again with one version")
        bodies.append(body)
    table = _parse_table(header + "\n" + "".join(bodies), kinds, root / IMAGES)
    counts = np.array([m["n_cells"] for m in metas])
    if len(table) != counts.sum():
        raise InputError(f"{root}: the images' rows.csv hold {len(table)} rows, their tiles "
                         f"{counts.sum()}")
    table[TILE_INDEX] = np.arange(len(table)) - np.repeat(np.cumsum(counts) - counts, counts)
    table = table.sort_values(["image_id", "mask_id"], kind="stable").reset_index(drop=True)
    duplicated = table["cell_id"][table["cell_id"].duplicated()]
    if len(duplicated):
        raise InputError(f"{root}: cell id {duplicated.iloc[0]} occurs more than once")
    meta = {"format": FORMAT, "version": VERSION, "tile_size": sizes.pop(),
            "channels": list(CHANNELS), "dtype": "uint16", "codec": CODEC,
            "chunks": "images/{image_id}/tiles/c/{tile_index}/0/0/0, one tile each",
            "columns": {**kinds, TILE_INDEX: "int"}, "n_cells": len(table),
            "images": {m["image_id"]: m["n_cells"] for m in metas}}
    atomic.write_text(root / TABLE, table.to_csv(index=False, lineterminator="\n"))
    atomic.write_text(root / META, json.dumps(meta, indent=1) + "\n")
    return table


def _read_image_meta(root: Path, image_id: str) -> dict:
    path = root / IMAGES / image_id / IMAGE_META
    meta = _read_json(path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{path}: not a version {VERSION} {FORMAT} image; cut it again")
    if meta.get("image_id") != image_id:
        raise InputError(f"{path}: describes image {meta.get('image_id')!r}, not {image_id!r}")
    return meta


def _merged_kinds(metas: list[dict]) -> dict[str, str]:
    """Each column's kind over all images; empty images (all-'str' columns) do not vote."""
    columns = metas[0]["columns"]
    voters = [m for m in metas if m["n_cells"]] or metas[:1]
    kinds = {}
    for name in columns:
        seen = {m["columns"].get(name, "str") for m in voters}
        kinds[name] = seen.pop() if len(seen) == 1 else "float" if seen <= {"int", "float"} else "str"
    return kinds


def _parse_table(text: str, kinds: dict[str, str], source: Path) -> pd.DataFrame:
    dtypes = {"bool": "bool", "int": "int64", "float": "float64", "str": "str"}
    try:
        return pd.read_csv(io.StringIO(text), dtype={c: dtypes[k] for c, k in kinds.items()},
                           keep_default_na=False,
                           na_values={c: ["", "nan", "NaN"] for c, k in kinds.items() if k == "float"})
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{source}: unreadable cell table ({exc})".replace("\n", " ")) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a JSON object")
    return value


def _stored_tile_size(root: Path) -> int | None:
    if (root / META).is_file():
        return int(_read_json(root / META)["tile_size"])
    ids = sorted(done_images(root))
    return int(_read_image_meta(root, ids[0])["tile_size"]) if ids else None


# ---------------------------------------------------------------------------------------------
# Reading


class CellStore:
    """The cells of a merged dataset folder: ``store[i]`` is the tile of row ``i`` of ``table``.

    Holds only the table, the folder and the tile size, so it pickles into DataLoader workers;
    every read opens, reads and closes one chunk file (safe across fork, spawn and threads).
    """

    def __init__(self, root: str | os.PathLike, table: pd.DataFrame, tile_size: int) -> None:
        self.root = Path(root)
        self.table = table
        self.tile_size = int(tile_size)
        self._image_ids = table["image_id"].to_numpy(dtype=object)
        self._tile_index = table[TILE_INDEX].to_numpy(dtype=np.int64)
        self._positions: pd.Index | None = None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> np.ndarray:
        """The (4, S, S) uint16 tile of row ``index`` of :attr:`table`."""
        out = np.empty(self._shape, np.uint16)
        self._read_into(self._row(index), out)
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_positions": None}

    @property
    def _shape(self) -> tuple[int, int, int]:
        return len(CHANNELS), self.tile_size, self.tile_size

    def index(self, cell_id: str) -> int:
        """The table row of ``cell_id`` (KeyError if the dataset has no such cell)."""
        if self._positions is None:
            self._positions = pd.Index(self.table["cell_id"])
        try:
            return int(self._positions.get_loc(cell_id))
        except (KeyError, TypeError):
            raise KeyError(f"no cell {cell_id!r} in {self.root}") from None

    def read(self, cell_id: str) -> np.ndarray:
        """The (4, S, S) uint16 tile of cell ``cell_id``."""
        return self[self.index(cell_id)]

    def tiles(self, indices: Iterable[int]) -> np.ndarray:
        """The tiles of the rows ``indices`` as one (N, 4, S, S) uint16 array."""
        rows = [self._row(i) for i in indices]
        out = np.empty((len(rows), *self._shape), np.uint16)
        for k, row in enumerate(rows):
            self._read_into(row, out[k])
        return out

    def chunk_path(self, index: int) -> Path:
        """The file that holds the tile of row ``index``."""
        row = self._row(index)
        return self.root / IMAGES / self._image_ids[row] / TILES / "c" / str(self._tile_index[row]) \
            / "0" / "0" / "0"

    def _row(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, (bool, np.bool_)):
            raise TypeError(f"a cell index must be an integer, got {type(index).__name__}")
        count = len(self._image_ids)
        if not -count <= index < count:
            raise IndexError(f"cell index {index} out of range for {count} cells")
        return int(index) % count

    def _read_into(self, row: int, out: np.ndarray) -> None:
        """Decode the chunk of ``row`` into ``out``: the zarr v3 chunk file of an array whose
        codecs are ``bytes`` (little-endian) then ``blosc``, as :func:`write_image` writes it."""
        path = self.chunk_path(row)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the tile of cell {self.table['cell_id'].iat[row]} "
                             f"({exc.strerror or exc})") from None
        # The Blosc header carries the decoded size at bytes 4-8; it must be exactly one tile.
        if len(data) < _BLOSC_HEADER or int.from_bytes(data[4:8], "little") != out.nbytes:
            raise InputError(f"{path}: corrupt tile (not a {out.nbytes}-byte Blosc chunk)")
        try:
            blosc.decompress(data, out)
        except RuntimeError as exc:
            raise InputError(f"{path}: corrupt tile ({exc})") from None
        if sys.byteorder != "little":  # pragma: no cover - the chunk is little-endian
            out.byteswap(inplace=True)


def open_cells(path: str | os.PathLike) -> CellStore:
    """Open a merged cell dataset folder (or its ``cells.csv``).

    Complete images written after the last :func:`merge` are not part of the store: a warning
    says how many there are (merging belongs to the writer, which knows when writing is over).
    """
    root = Path(path)
    if root.name == TABLE and root.is_file():
        root = root.parent
    if not root.is_dir():
        raise InputError(f"{root}: no such cell dataset folder")
    if not (root / TABLE).is_file():
        count = len(done_images(root))
        if count:
            raise InputError(f"{root}: no {TABLE} yet, though it holds {count} complete images; "
                             f"merge them with: python -m hpasc.cellstore merge --dataset {root}")
        raise InputError(f"{root}: not a cell dataset (no {TABLE} and no images; "
                         "run image_cutter.py to make one)")
    meta = _read_json(root / META) if (root / META).is_file() else {}
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{root}: missing or unknown {META} (need a version {VERSION} {FORMAT}); "
                         f"run: python -m hpasc.cellstore merge --dataset {root}")
    table = _parse_table(_read_text(root / TABLE), meta["columns"], root / TABLE)
    missing = [c for c in (*REQUIRED_COLUMNS, TILE_INDEX) if c not in table.columns]
    if missing:
        raise InputError(f"{root / TABLE}: missing column(s) {', '.join(missing)}")
    merged = set(meta["images"])
    present = done_images(root)
    gone = sorted(merged - present)
    if gone:
        raise InputError(f"{root}: {len(gone)} merged image(s) are missing from {IMAGES}/ "
                         f"(e.g. {gone[0]}); run merge again")
    unmerged = present - merged
    if unmerged:
        log.warning("%s: %d complete image(s) are not in %s yet (written after the last merge); "
                    "run merge to include them", root, len(unmerged), TABLE)
    return CellStore(root, table, meta["tile_size"])


# ---------------------------------------------------------------------------------------------
# Export to viewable PNGs

# RGB weights of the red (microtubules), green (protein), blue (nucleus) and yellow (ER)
# channels: the protein at full strength, the references dimmer, yellow as red + green.
MIX = np.array([[0.55, 0.0, 0.0, 0.45],
                [0.0, 1.0, 0.0, 0.45],
                [0.0, 0.0, 0.75, 0.0]], np.float32)


def composite(tile: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """An 8-bit RGB (S, S, 3) view of a (4, S, S) tile.

    Each channel is scaled so that its ``percentile`` over the cell (its non-zero pixels) becomes
    full intensity, then the channels are mixed with :data:`MIX` and clipped.
    """
    if tile.ndim != 3 or tile.shape[0] != len(CHANNELS):
        raise ValueError(f"need a (4, S, S) tile, got {tile.shape}")
    scaled = np.zeros(tile.shape, np.float32)
    for channel, plane in enumerate(tile):
        signal = plane[plane > 0]
        if signal.size:
            top = max(float(np.percentile(signal, percentile)), 1.0)
            scaled[channel] = plane / np.float32(top)
    rgb = np.tensordot(MIX, np.minimum(scaled, 1.0), axes=1)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)


def export_pngs(store: CellStore, cell_ids: Sequence[str], out_dir: str | os.PathLike,
                raw: bool = False, percentile: float = 99.5,
                progress: Callable[[Iterable[str]], Iterable[str]] = iter) -> list[Path]:
    """Write ``{out_dir}/{cell_id}.png`` (an RGB :func:`composite`) for each cell, and with ``raw``
    also ``{cell_id}_{red,green,blue,yellow}.png`` (16-bit, the tile's channels unchanged).

    ``progress`` wraps the iteration (e.g. a progress bar). Returns the written paths in order.
    """
    out = Path(out_dir)
    rows = [store.index(c) for c in cell_ids]  # KeyError before anything is written
    written = []
    for cell_id, row in zip(progress(cell_ids), rows):
        tile = store[row]
        path = out / f"{cell_id}.png"
        ok, encoded = cv2.imencode(".png", composite(tile, percentile)[..., ::-1])
        if not ok:
            raise OSError(f"PNG encoding failed for {path}")
        atomic.write_bytes(path, encoded.tobytes())
        written.append(path)
        if raw:
            for channel, plane in zip(CHANNELS, tile):
                write_png(out / f"{cell_id}_{channel}.png", plane)
                written.append(out / f"{cell_id}_{channel}.png")
    return written


# ---------------------------------------------------------------------------------------------
# Command line


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentile in (0, 100], got {value}")
    return value


def _dataset_parser(description: str) -> argparse.ArgumentParser:
    parser = cli.stage_parser(description)
    parser.add_argument("--dataset", type=Path, required=True, metavar="D",
                        help="the cell dataset folder (image_cutter.py's output)")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = _dataset_parser("Write viewable PNGs of chosen cells of a cell dataset: an RGB "
                             "composite per cell (green = protein, red = microtubules, blue = "
                             "nucleus, yellow = ER) and, with --raw, the four 16-bit channels.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--cells", nargs="+", metavar="ID", help="cell ids ({image ID}_{k}) to export")
    which.add_argument("--limit", type=cli.positive_int, metavar="N",
                       help="export the first N cells of the table")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for the PNGs ({cell id}.png, {cell id}_{channel}.png)")
    parser.add_argument("--raw", action="store_true",
                        help="also write each channel as a 16-bit greyscale PNG")
    parser.add_argument("--percentile", type=_percentile, default=99.5,
                        help="per-channel brightness percentile (of the cell's pixels) shown as "
                             "full intensity in the composite")
    return parser


def _export(args: argparse.Namespace) -> int:
    options = cli.CommonOptions.from_args(args)
    store = open_cells(args.dataset)
    if args.cells:
        known = set(store.table["cell_id"])
        unknown = [c for c in args.cells if c not in known]
        if unknown:
            raise InputError(f"{args.dataset}: no cell(s) {', '.join(unknown[:3])}"
                             + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""))
        cell_ids = list(args.cells)
    else:
        cell_ids = store.table["cell_id"].iloc[: args.limit].tolist()
    written = export_pngs(store, cell_ids, args.out, raw=args.raw, percentile=args.percentile,
                          progress=lambda ids: options.bar(ids, unit="cell", desc="export"))
    log.info("wrote %d PNG files of %d cells to %s", len(written), len(cell_ids), args.out)
    return cli.EXIT_OK


def _merge_parser() -> argparse.ArgumentParser:
    parser = _dataset_parser("Merge the complete images of a cell dataset into its cells.csv and "
                             "store.json (image_cutter.py does this at the end of every run), and "
                             "remove temporary folders whose writer is gone.")
    parser.add_argument("--stale-after", type=cli.at_least(0.0, float), default=STALE_AFTER_S,
                        metavar="SECONDS",
                        help="remove another machine's temporary folders unchanged for this long")
    return parser


def _merge(args: argparse.Namespace) -> int:
    if not args.dataset.is_dir():
        raise InputError(f"{args.dataset}: no such cell dataset folder")
    table = merge(args.dataset, args.stale_after)
    log.info("%s: %d cells of %d images", args.dataset, len(table), table["image_id"].nunique())
    return cli.EXIT_OK


COMMANDS = {"export": (_export_parser, _export, "write PNGs of chosen cells"),
            "merge": (_merge_parser, _merge, "merge complete images into cells.csv")}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        top = argparse.ArgumentParser(prog="python -m hpasc.cellstore",
                                      description="Tools for a cell dataset folder (the cell store).")
        top.add_argument("command", choices=list(COMMANDS),
                         help="; ".join(f"{k}: {v[2]}" for k, v in COMMANDS.items()))
        top.parse_args(argv[:1])
        return
    make_parser, stage, _ = COMMANDS[argv[0]]
    parser = make_parser()
    parser.prog = f"python -m hpasc.cellstore {argv[0]}"
    cli.run(stage, parser.parse_args(argv[1:]))


if __name__ == "__main__":
    main()
