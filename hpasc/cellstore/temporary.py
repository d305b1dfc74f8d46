"""Temporary image folders, ``images/.{ID}~{writer}~{pid}~{token}.tmp``: their names, and removing
those whose writer is gone (the rule is :func:`hpasc.core.ownership.abandoned`)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from hpasc.cellstore.layout import IMAGES, is_temporary
from hpasc.core.ownership import STALE_AFTER_S, abandoned, writer_info, writer_tag

__all__ = ["STALE_AFTER_S", "abandoned", "clean_temporary", "temporary_name", "writer_info"]


def temporary_name(image_id: str) -> str:
    return f".{image_id}~{writer_tag()}~{secrets.token_hex(4)}.tmp"


def clean_temporary(root: str | os.PathLike, stale_after: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary folders in ``root/images`` whose writer is gone; returns them."""
    folder = Path(root) / IMAGES
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if is_temporary(entry.name) and entry.is_dir() and abandoned(entry, stale_after):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
