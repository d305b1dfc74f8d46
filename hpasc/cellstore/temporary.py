"""Temporary image folders, ``images/.{ID}~{writer}~{pid}~{token}.tmp``: their names, who
writes them, and removing those whose writer is gone."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

from hpasc.cellstore.layout import IMAGES, is_temporary

# A temporary folder whose writer cannot be checked (another machine) counts as abandoned once
# nothing in it has changed for this long; one image takes seconds to write.
STALE_AFTER_S = 3600.0


def temporary_name(image_id: str) -> str:
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


def writer_info() -> dict:
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
        if is_temporary(entry.name) and entry.is_dir() and abandoned(entry, stale_after):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
