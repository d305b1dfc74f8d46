"""Exclusive locks on output folders, so that two processes never interleave one folder's updates.

``fcntl.flock`` on ``{folder}/.lock``: the kernel drops the lock when its holder exits, kill -9
included, so a crash never leaves a folder locked. The file keeps the holder's host and pid for
the message a second process prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from hpasc.core.errors import InputError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str, wait: bool = True) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if need be) while the block runs.

    ``wait``: block until the holder lets go; otherwise a held lock is an :class:`InputError`
    that says ``what`` holds it (e.g. "another label tool").
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot lock {folder} ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InputError(f"{folder} is in use by {what} ({holder}); stop it or choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
