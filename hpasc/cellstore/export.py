"""Viewable PNGs of cells: an RGB :func:`composite` per tile and, optionally, its raw channels."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from hpasc.cellstore.read import CellStore
from hpasc.core.images import CHANNELS, composite, write_png


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
        write_png(path, composite(tile, percentile))
        written.append(path)
        if raw:
            for channel, plane in zip(CHANNELS, tile):
                write_png(out / f"{cell_id}_{channel}.png", plane)
                written.append(out / f"{cell_id}_{channel}.png")
    return written
