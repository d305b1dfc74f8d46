"""What a running stage shares: its common options as a typed value (workers, device, shard,
progress), the plan of which items to do, failure reporting, device choice, logging, and the
manifest it leaves in its output folder. The command line that fills these lives in :mod:`hpasc.commands.cli`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from hpasc.core import __version__, atomic
from hpasc.core.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

MANIFEST_PACKAGES = ("numpy", "opencv-python-headless", "scikit-image", "tifffile", "torch", "pandas", "timm",
                     "anndata")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count`` equal parts of a sorted item list."""

    index: int = 0
    count: int = 1

    def select(self, items: Iterable[T]) -> list[T]:
        """Every ``count``-th item starting at ``index``: balanced and stable for sorted input."""
        return list(items)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """A file-name suffix that keeps the outputs of concurrent shards apart ('' if unsharded)."""
        return "" if self.count == 1 else f"-shard{self.index}of{self.count}"


@dataclass(frozen=True)
class CommonOptions:
    """The common flags as a typed value that stage functions take instead of many arguments."""

    workers: int = 1
    device: str = "auto"
    overwrite: bool = False
    shard: Shard = field(default_factory=Shard)
    progress: bool = True

    def bar(self, iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
        """A tqdm progress bar that honours ``--no-progress``."""
        return tqdm(iterable, disable=not self.progress, dynamic_ncols=True, **kwargs)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which batch schedulers set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan_work(ids: list[str], is_done: Callable[[str], bool], options: CommonOptions,
              done_words: str) -> tuple[list[str], list[str]]:
    """This shard's part of ``ids`` and, of that, the items still to do (all with --overwrite).

    The skipped items are one line, ``<count> image(s) <done_words>, skipped``, and one line each at
    DEBUG level: a re-run of a finished stage says so without a line per image.
    """
    mine = options.shard.select(ids)
    todo = [i for i in mine if options.overwrite or not is_done(i)]
    skipped = sorted(set(mine) - set(todo))
    for item in skipped:
        log.debug("%s: %s, skipped", item, done_words)
    if skipped:
        log.info("%d image(s) %s, skipped (--overwrite redoes them)", len(skipped), done_words)
    return mine, todo


def log_done(what: str, failed: int, where: str | os.PathLike) -> None:
    """A stage's last line, the one a person reads first: what was done, what failed, where."""
    log.info("done: %s; %d failed; output in %s", what, failed, where)


def describe_failure(error: BaseException) -> str:
    """One line for why an item failed. An unexpected error (not an InputError) is logged with
    its traceback at DEBUG level: one odd item should not end a long run, nor hide a bug."""
    if isinstance(error, InputError):
        return str(error)
    log.debug("unexpected error", exc_info=error)
    return f"{type(error).__name__}: {error}"


def log_failures(failures: dict[str, str]) -> None:
    for item, reason in sorted(failures.items()):
        log.error("%s: failed: %s", item, reason)


def resolve_device(name: str) -> str:
    """Turn ``auto`` into ``cuda`` or ``cpu``; refuse CUDA when none is available."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return name


class _TqdmHandler(logging.StreamHandler):
    """Log through tqdm.write so that log lines do not tear a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging(level: str) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def write_manifest(folder: str | os.PathLike, stage: str, arguments: Mapping[str, object],
                   extra: dict | None = None, settings: Mapping[str, object] | None = None) -> Path:
    """Write ``manifest{shard suffix}.json``: the stage, its arguments (the parsed flags, by name),
    the typed settings they made when the stage has a versioned record of them (a training run's
    :class:`~hpasc.stages.train.config.RunRecord`, as its checkpoints hold it), and software versions."""
    shard = arguments.get("shard", Shard())
    path = Path(folder) / f"manifest{shard.suffix}.json"
    manifest = {
        "stage": stage,
        "command": sys.argv,
        "arguments": {k: _jsonable(v) for k, v in arguments.items()},
        **({"settings": dict(settings)} if settings is not None else {}),
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hpasc": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        **(extra or {}),
    }
    atomic.write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, Shard):
        return f"{value.index}/{value.count}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def package_versions() -> dict[str, str]:
    """The installed versions of the packages whose behaviour a run's outputs depend on."""
    versions = {}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
