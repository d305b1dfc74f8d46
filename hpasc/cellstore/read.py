"""Reading a merged cell dataset folder: :func:`open_cells` gives a :class:`CellStore` that
reads tiles straight from their chunk files; :func:`open_tiles` opens one image's tiles in zarr."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from numcodecs import blosc
from zarr.storage import LocalStore

from hpasc.cells.tile_spec import TileSpec
from hpasc.cellstore.layout import (CHUNK_SEPARATORS, FORMAT, IMAGES, META, REQUIRED_COLUMNS, TABLE, TILE_INDEX, TILES,
                                    VERSION, chunk_file, done_images, image_done, parse_table, read_json, read_text)
from hpasc.core.errors import InputError
from hpasc.core.images import CHANNELS

log = logging.getLogger(__name__)

_BLOSC_HEADER = 16


class CellStore:
    """The cells of a merged dataset folder: ``store[i]`` is the tile of row ``i`` of ``table``.

    Holds only the table, the folder and the tile spec, so it pickles into loader workers;
    every read opens, reads and closes one chunk file (safe across fork, spawn and threads).
    """

    def __init__(self, root: str | os.PathLike, table: pd.DataFrame, tile_spec: TileSpec) -> None:
        self.root = Path(root)
        self.table = table
        self.tile_spec = tile_spec
        """How the tiles were cut (image_cutter's record)."""
        self._image_ids = table["image_id"].to_numpy(dtype=object)
        self._tile_index = table[TILE_INDEX].to_numpy(dtype=np.int64)
        self._positions: pd.Index | None = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def tile_size(self) -> int:
        return self.tile_spec.size

    def __getitem__(self, index: int) -> np.ndarray:
        """The (4, S, S) uint16 tile of row ``index`` of :attr:`table`."""
        out = np.empty(self._shape, np.uint16)
        self.read_into(index, out)
        return out

    def read_into(self, index: int, out: np.ndarray) -> None:
        """Decode the tile of row ``index`` into ``out``, a (4, S, S) uint16 array (a batch's slot)."""
        self._read_into(self._row(index), out)

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

    def require(self, cell_ids: Iterable[str]) -> list[int]:
        """The table rows of ``cell_ids`` (user input); InputError naming unknown ones."""
        cell_ids = list(cell_ids)
        known = set(self.table["cell_id"])
        unknown = [c for c in cell_ids if c not in known]
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise InputError(f"{self.root}: no cell(s) {', '.join(unknown[:3])}{more}")
        return [self.index(c) for c in cell_ids]

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

    def _chunk_files(self, row: int) -> list[Path]:
        """Where the tile of ``row`` may be: with each chunk key separator, the current first."""
        tiles = self.root / IMAGES / self._image_ids[row] / TILES
        return [chunk_file(tiles, int(self._tile_index[row]), s) for s in CHUNK_SEPARATORS]

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
        path, data = self._read_chunk(row)
        # The Blosc header carries the decoded size at bytes 4-8; it must be exactly one tile.
        if len(data) < _BLOSC_HEADER or int.from_bytes(data[4:8], "little") != out.nbytes:
            raise InputError(f"{path}: corrupt tile (not a {out.nbytes}-byte Blosc chunk)")
        try:
            blosc.decompress(data, out)
        except RuntimeError as exc:
            raise InputError(f"{path}: corrupt tile ({exc})") from None
        if sys.byteorder != "little":  # pragma: no cover - the chunk is little-endian
            out.byteswap(inplace=True)

    def _read_chunk(self, row: int) -> tuple[Path, bytes]:
        """The chunk file of ``row`` and its bytes: one open for current images, a second
        (after a missing file) for images written with the earlier separator."""
        paths = self._chunk_files(row)
        for path in paths:
            try:
                return path, path.read_bytes()
            except FileNotFoundError as exc:
                failure = paths[0], exc  # a missing tile is reported where current images keep it
            except OSError as exc:
                failure = path, exc
                break
        path, exc = failure
        raise InputError(f"{path}: cannot read the tile of cell {self.table['cell_id'].iat[row]} "
                         f"({exc.strerror or exc})") from None


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
                             f"merge them with: hpasc-cellstore merge --dataset {root}")
        raise InputError(f"{root}: not a cell dataset (no {TABLE} and no images; "
                         "run hpasc-cut to make one)")
    meta = read_json(root / META) if (root / META).is_file() else {}
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InputError(f"{root}: missing or unknown {META} (need a version {VERSION} {FORMAT}); "
                         f"run: hpasc-cellstore merge --dataset {root}")
    table = parse_table(read_text(root / TABLE), meta["columns"], root / TABLE, (*REQUIRED_COLUMNS, TILE_INDEX))
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
    return CellStore(root, table, _tile_spec(root, meta))


def _tile_spec(root: Path, meta: dict) -> TileSpec:
    try:
        return TileSpec.from_record(meta)
    except (KeyError, ValueError) as exc:
        raise InputError(f"{root}: {META} has no usable tile spec ({exc})") from None


def open_tiles(root: str | os.PathLike, image_id: str) -> zarr.Array:
    """Image ``image_id``'s tiles as a read-only zarr array (n_cells, 4, S, S)."""
    path = Path(root) / IMAGES / image_id / TILES
    if not image_done(root, image_id):
        raise InputError(f"{root}: no complete image {image_id}")
    return zarr.open_array(LocalStore(path, read_only=True), mode="r")
