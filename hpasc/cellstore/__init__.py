"""The cell dataset folder: one table row and one (4, S, S) uint16 tile per cell.

Layout of a dataset folder ``ROOT`` (format version 1)::

    ROOT/store.json                   tile spec (how the tiles were cut), channels, dtype, codec,
                                      columns, merged images
    ROOT/cells.csv                    the merged table: every complete image's rows, sorted by
                                      image id then mask id, plus ``tile_index`` (see below)
    ROOT/images/{ID}/tiles/           a zarr v3 array (n_cells, 4, S, S) uint16, one chunk per
                                      tile (``tiles/c.{k}.0.0.0``; ``tiles/c/{k}/0/0/0`` in images
                                      cut before 2026-11-24), Blosc zstd with byte shuffle
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
open files or handles: it pickles cheaply into loader workers (fork or spawn).
:func:`open_tiles` opens an image's tiles as a zarr array for everything else.

``tile_index`` in ``cells.csv`` is the cell's position in its image's array, so the table may be
filtered or reordered by a user without losing its tiles.

Command line: ``hpasc-cellstore export|merge --help``.

Modules: ``layout`` (names, formats, which images are complete), ``temporary`` (temporary folders
and their writers), ``write`` (:func:`write_image`, :func:`merge`), ``read`` (:class:`CellStore`,
:func:`open_cells`), ``export`` (PNGs of cells); the command line is :mod:`hpasc.commands.cellstore`.
"""

from hpasc.cellstore.export import export_pngs
from hpasc.cellstore.layout import (FORMAT, IMAGE_META, IMAGES, MARKER, META, REQUIRED_COLUMNS, ROWS, TABLE, TILE_INDEX,
                                    TILES, VERSION, done_images, image_done)
from hpasc.cellstore.read import CellStore, open_cells, open_tiles
from hpasc.cellstore.temporary import STALE_AFTER_S, abandoned, clean_temporary
from hpasc.cellstore.write import CODEC, check_cut, merge, write_image

__all__ = [
    "CODEC", "FORMAT", "IMAGES", "IMAGE_META", "MARKER", "META", "REQUIRED_COLUMNS", "ROWS",
    "STALE_AFTER_S", "TABLE", "TILES", "TILE_INDEX", "VERSION", "CellStore", "abandoned",
    "check_cut", "clean_temporary", "done_images", "export_pngs", "image_done",
    "merge", "open_cells", "open_tiles", "write_image",
]
