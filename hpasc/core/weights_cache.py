"""A local cache of downloaded files: every kind of network weights the pipeline uses, and the
4th place's label folder.

Segmentation (HPA's DPN-UNets), classification (ImageNet EfficientNets) and the labels
(:mod:`hpasc.labels.fourth_place_source`) keep their files under one cache root and fetch a
missing file the same way: with :func:`hpasc.core.http.fetch`'s timeouts and retries, into a
temporary name that becomes the final name only once the file has been read back successfully, so an interrupted or wrong download (a login page, a truncated body)
never sits in the cache looking like what was asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tqdm import tqdm

from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.http import HttpPolicy, check_reachable, fetch

log = logging.getLogger(__name__)


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir(subfolder: str) -> Path:
    """``$HPASC_CACHE/{subfolder}`` if HPASC_CACHE is set, else ``~/.cache/hpasc/{subfolder}``."""
    root = os.environ.get("HPASC_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "hpasc") / subfolder


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line, for one-line error messages."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def download(url: str, target: Path, validate: Callable[[Path], object], policy: HttpPolicy,
             progress: bool) -> None:
    """:func:`save` with a log line and a progress bar (the size and rate once the body is in)."""
    check_reachable(url, policy.timeout)
    log.info("downloading %s to %s", url, target.parent)
    with tqdm(desc=target.name, unit="B", unit_scale=True, disable=not progress) as bar:
        bar.update(save(url, target, validate, policy))


def save(url: str, target: Path, validate: Callable[[Path], object], policy: HttpPolicy) -> int:
    """Fetch ``url`` to ``target`` atomically, keeping it only if ``validate(path)`` accepts it;
    returns its size.

    ``validate`` raises InputError for a file that is not what was expected; fetch then tries
    again as for a truncated body, and raises FetchError once its retries are spent. Network
    failures raise FetchError too; nothing is left under ``target`` on any failure.
    """
    with atomic.atomic_path(target) as tmp:
        def keep_if_valid(body: IO[bytes]) -> int:
            with tmp.open("wb") as copy:
                shutil.copyfileobj(body, copy)
            try:
                validate(tmp)
            except InputError as exc:  # the temporary name means nothing to the user
                raise InputError(str(exc).replace(str(tmp), "the downloaded file")) from None
            return tmp.stat().st_size

        return fetch(url, policy, keep_if_valid)
