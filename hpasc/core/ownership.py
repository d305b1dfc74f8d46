"""Who writes a temporary file or folder, and whether that writer is gone.

A temporary's name carries ``{writer}~{pid}``: the writer id of the machine and container that
made it and the pid of the process. A stage removes on start the temporaries of its own folders
whose writer is gone (a kill -9 leaves them behind), never those of a shard still running beside
it, here or on another machine of a cluster.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from pathlib import Path

# A temporary whose writer cannot be checked (another machine) counts as abandoned once nothing
# in it has changed for this long; one item takes seconds to write.
STALE_AFTER_S = 3600.0

# "{writer}~{pid}~{random}.tmp": what every temporary name holds just before its ".tmp".
_TAG = re.compile(r"([0-9a-f]{12})~([0-9]+)~[a-z0-9_]+\.tmp")
_WRITER_ID: str | None = None


def writer_id() -> str:
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


def writer_tag() -> str:
    """``{writer}~{pid}`` of this process, for a temporary's name."""
    return f"{writer_id()}~{os.getpid()}"


def writer_info() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "writer": writer_id(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _last_change(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir():
        for directory, _, files in os.walk(path):
            for name in [*files, "."]:
                try:
                    newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def is_tagged(name: str) -> bool:
    """Whether a temporary's name carries a writer tag."""
    return _TAG.search(name) is not None


def abandoned(path: Path, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether the temporary file or folder ``path`` no longer has a live writer.

    Its name's tag is this machine's (same boot and pid namespace): its writer process has
    exited. Otherwise (another machine, an untagged name, or a pid that may have been reused):
    nothing in it has changed for ``stale_after`` seconds.
    """
    tag = _TAG.search(path.name)
    if tag is not None and tag[1] == writer_id() and int(tag[2]) != os.getpid() and not pid_alive(int(tag[2])):
        return True
    try:
        return time.time() - _last_change(path) > stale_after
    except FileNotFoundError:
        return False  # renamed into place or removed meanwhile
