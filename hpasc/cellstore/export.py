"""Viewable PNGs of cells: an RGB :func:`composite` per tile and, optionally, its raw channels."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from hpasc.cellstore.read import CellStore
from hpasc.images import CHANNELS, write_png

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
        write_png(path, composite(tile, percentile))
        written.append(path)
        if raw:
            for channel, plane in zip(CHANNELS, tile):
                write_png(out / f"{cell_id}_{channel}.png", plane)
                written.append(out / f"{cell_id}_{channel}.png")
    return written
