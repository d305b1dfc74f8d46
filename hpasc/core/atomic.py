"""Atomic file writes: a file either appears whole under its final name or not at all.

The temporary file's name carries its writer (:mod:`hpasc.core.ownership`), so that a stage can remove
on start the temporaries a killed run left in its folders without touching a running shard's.
A written file gets the permissions the umask gives a new file (0644 by default), not the 0600
of a temporary file, so that a cluster's other users and containers can read results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hpasc.core.ownership import STALE_AFTER_S, abandoned, is_tagged, writer_tag

log = logging.getLogger(__name__)


def _umask() -> int:
    try:  # Linux shows it; elsewhere it can only be read by setting it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file lives in the destination folder so that ``os.replace`` is a same-filesystem
    rename (atomic on POSIX). It keeps the destination's suffix by default because writers such as
    OpenCV choose the format from the extension. On any exception the temporary file is removed.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{writer_tag()}~",
                                        suffix=".tmp" + (final.suffix if suffix is None else suffix),
                                        dir=final.parent)
    except OSError as exc:
        raise _naming(exc, final) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _naming(exc, final) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _naming(error: OSError, final: Path) -> OSError:
    """``error`` naming the file the caller asked for: a failed write (a full disk, a file size
    limit) names no file, and a failed temporary names one the user never heard of."""
    return type(error)(error.errno, error.strerror or str(error), str(final))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def is_temporary(path: str | os.PathLike) -> bool:
    """True for a leftover temporary file of :func:`atomic_path` (e.g. after a kill -9)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def remove_abandoned(folder: str | os.PathLike, of: str | None = None,
                     stale_after: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporaries of this module in ``folder`` (not below it; only those of the file
    named ``of`` when given) whose writer is gone; returns them. A user's own dot files, even
    ``.x.tmp`` ones, are never touched: only names with a writer tag are ours."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        mine = is_temporary(entry.name) and is_tagged(entry.name)
        if mine and (of is None or entry.name.startswith(f".{of}.")) and abandoned(entry, stale_after):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            log.info("removed %s, left by a run that was killed", entry)
            removed.append(entry)
    return removed
