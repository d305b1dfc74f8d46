"""A channel file format: one plane as a NumPy ``.npy`` file (``{ID}_{channel}.npy``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import numpy as np

from hpasc.core.errors import InputError
from hpasc.core.images import ChannelFormat, Limits, check_pixels


def _decode(path: Path, source: IO[bytes], limits: Limits) -> np.ndarray:
    try:
        plane = np.load(io.BytesIO(source.read()), allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: not a .npy plane ({exc})") from None
    check_pixels(path, plane.shape[1], plane.shape[0], limits)
    return plane


def _size(path: Path) -> tuple[int, int]:
    height, width = np.load(path, mmap_mode="r").shape[:2]
    return width, height


def _encode(_path: Path, plane: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, plane, allow_pickle=False)
    return buffer.getvalue()


NPY = ChannelFormat((".npy",), _decode, _size, _encode)
