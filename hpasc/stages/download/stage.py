"""Download public-HPA images (the 4th place's extra training data) as 16-bit Kaggle-layout PNGs.

Each selected CSV row names a URL prefix; its four ``{prefix}_{color}.tif.gz`` files are fetched,
each is decompressed and decoded in memory, and only when all four are good are the PNGs written
(atomically), so a failed image never leaves a partial set behind.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from hpasc.core import atomic, runtime
from hpasc.core.errors import InputError
from hpasc.core.http import FetchError, HttpPolicy, fetch
from hpasc.core.images import CHANNELS, LIMITS, decode_channel, write_png
from hpasc.core.runtime import CommonOptions, describe_failure
from hpasc.labels.public_table import read_public_csv

log = logging.getLogger(__name__)
T = TypeVar("T")

@dataclass(frozen=True)
class Selection:
    """Which CSV rows to download."""

    include_trainset: bool = False
    celllines: tuple[str, ...] = ()
    labels: tuple[int, ...] = ()
    limit: int | None = None


def select_rows(table: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """Rows with a competition label (and not in the Kaggle train set unless asked), filtered."""
    keep = table["Label_idx"] != ""
    if not selection.include_trainset:
        keep &= ~table["in_trainset"]
    if selection.celllines:
        keep &= table["Cellline"].isin(selection.celllines)
    if selection.labels:
        wanted = {str(c) for c in selection.labels}
        keep &= table["Label_idx"].map(lambda text: bool(wanted & set(text.split("|"))))
    chosen = table[keep]
    duplicated = chosen["ID"].duplicated()
    for image_id in chosen.loc[duplicated, "ID"]:
        log.warning("%s: another selected row has the same file name; keeping the first", image_id)
    chosen = chosen[~duplicated]
    if selection.limit is not None:
        chosen = chosen.head(selection.limit)
    return chosen.reset_index(drop=True)


def fetch_channel(url: str, policy: HttpPolicy, stop: threading.Event | None = None) -> np.ndarray:
    """Fetch one ``.tif.gz`` channel and decode it to uint16 (a file that fails to decode is
    fetched again, up to the retry limit)."""
    name = url.rsplit("/", 1)[-1]
    # A compressed file that is larger than its inflated limit cannot inflate within it.
    policy = replace(policy, max_bytes=min(policy.max_bytes, LIMITS.max_inflated_bytes))
    return fetch(url, policy, lambda body: decode_channel(body, name), stop)


def channel_paths(out: Path, image_id: str) -> list[Path]:
    return [out / f"{image_id}_{channel}.png" for channel in CHANNELS]


def download_image(prefix: str, image_id: str, out: Path, policy: HttpPolicy,
                   stop: threading.Event | None = None) -> None:
    """Fetch all four channels, then write them; on failure remove any partial set on disk."""
    try:
        planes = [fetch_channel(f"{prefix}_{channel}.tif.gz", policy, stop) for channel in CHANNELS]
    except FetchError:
        paths = channel_paths(out, image_id)
        if not all(p.is_file() for p in paths):
            for path in paths:
                path.unlink(missing_ok=True)
        raise
    for path, plane in zip(channel_paths(out, image_id), planes):
        write_png(path, plane)


def download_public_hpa(csv_path: Path, out: Path, selection: Selection, policy: HttpPolicy,
                        options: CommonOptions) -> list[str]:
    """Download the selected images into ``out``; write its labels and failures CSVs.

    Returns the IDs of the images that failed (they are also listed in the failures file).
    """
    rows = select_rows(read_public_csv(csv_path), selection)
    if rows.empty:
        raise InputError(f"{csv_path}: no row has a competition label and matches the selection")
    rows = rows.iloc[options.shard.select(range(len(rows)))]
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_abandoned(out)
    todo = []
    for prefix, image_id in zip(rows["Image"], rows["ID"]):
        if not options.overwrite and all(p.is_file() for p in channel_paths(out, image_id)):
            log.debug("%s: already downloaded, skipped", image_id)
        else:
            todo.append((prefix, image_id))
    log.info("%d selected images, %d to download (%d already downloaded, skipped)", len(rows), len(todo),
             len(rows) - len(todo))
    failures = _download_all(todo, out, policy, options)
    _write_tables(out, rows, failures, options)
    runtime.log_done(f"{len(todo) - len(failures)} images downloaded, {len(rows) - len(todo)} downloaded before "
                     f"(failures listed in failures{options.shard.suffix}.csv)", len(failures), out)
    return sorted(failures)


def _download_all(todo: list[tuple[str, str]], out: Path, policy: HttpPolicy,
                  options: CommonOptions) -> dict[str, str]:
    """Download ``(prefix, image id)`` pairs in threads; image id → failure reason. ^C stops at
    once: queued images are cancelled and running ones start no further request."""
    failures: dict[str, str] = {}
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=options.workers)
    try:
        futures = {pool.submit(download_image, p, i, out, policy, stop): i for p, i in todo}
        for future in options.bar(as_completed(futures), total=len(futures), unit="image"):
            error = future.exception()
            if error is not None:
                failures[futures[future]] = str(error) if isinstance(error, FetchError) else describe_failure(error)
                log.error("%s: failed: %s", futures[future], failures[futures[future]])
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return failures


def _write_tables(out: Path, rows: pd.DataFrame, failures: dict[str, str],
                  options: CommonOptions) -> None:
    suffix = options.shard.suffix
    complete = rows[[i not in failures for i in rows["ID"]]]
    labels = pd.DataFrame({"ID": complete["ID"], "Label": complete["Label_idx"]})
    atomic.write_text(out / f"labels{suffix}.csv", labels.to_csv(index=False))
    failed = rows[[i in failures for i in rows["ID"]]]
    table = pd.DataFrame({"ID": failed["ID"], "Image": failed["Image"],
                          "reason": [failures[i] for i in failed["ID"]]})
    atomic.write_text(out / f"failures{suffix}.csv", table.to_csv(index=False))
