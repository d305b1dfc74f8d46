"""What every stage's command line shares: common flags, logging, progress bars, the manifest,
and turning user mistakes into one-line errors.

A script builds its parser with :func:`stage_parser`, picks the common flags that mean something
for it (a flag that a stage would ignore is not offered), and hands its work to :func:`run`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import sys
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar
from collections.abc import Callable, Iterable

from tqdm import tqdm

import hpasc
from hpasc import atomic
from hpasc.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_OK, EXIT_SOME_FAILED, EXIT_INPUT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMON_FLAGS = ("workers", "device", "overwrite", "shard")
MANIFEST_PACKAGES = ("numpy", "opencv-python-headless", "scikit-image", "tifffile", "torch", "pandas")


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


def parse_shard(text: str) -> Shard:
    """argparse type for ``K/N`` with 0 <= K < N."""
    try:
        index_text, count_text = text.split("/")
        shard = Shard(int(index_text), int(count_text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/4, got {text!r}") from None
    if shard.count < 1 or not 0 <= shard.index < shard.count:
        raise argparse.ArgumentTypeError(f"need 0 <= K < N, got {text!r}")
    return shard


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def at_least(minimum: float, kind: type = int) -> Callable[[str], float]:
    """argparse type: a number of ``kind`` that is >= ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a value >= {minimum}, got {value}")
        return value

    return parse


positive_int = at_least(1)


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")



class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults only where they say something (not for switches or empty lists)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        # Identity, not equality: a default of 0 (== False) is worth showing.
        if action.default is None or action.default is False or action.default == [] \
                or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def stage_parser(description: str | None, flags: Iterable[str] = ()) -> argparse.ArgumentParser:
    """A parser with ``--log-level`` and ``--no-progress`` plus the chosen common ``flags``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    unknown = set(flags) - set(COMMON_FLAGS)
    if unknown:
        raise ValueError(f"unknown common flags {sorted(unknown)}")
    group = parser.add_argument_group("common options")
    if "workers" in flags:
        group.add_argument("--workers", type=positive_int, default=default_workers(),
                           help="parallel worker processes or threads")
    if "device" in flags:
        group.add_argument("--device", type=_device, default="auto",
                           help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    if "overwrite" in flags:
        group.add_argument("--overwrite", action="store_true",
                           help="redo items whose output already exists (without it they are skipped)")
    if "shard" in flags:
        group.add_argument("--shard", type=parse_shard, default=Shard(), metavar="K/N",
                           help="process only part K of N (0-based) of the items, e.g. "
                                "$SLURM_ARRAY_TASK_ID/N in a cluster array job")
    group.add_argument("--log-level", default="INFO",
                       choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging verbosity")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


@dataclass(frozen=True)
class CommonOptions:
    """The common flags as a typed value that stage functions take instead of many arguments."""

    workers: int = 1
    device: str = "auto"
    overwrite: bool = False
    shard: Shard = field(default_factory=Shard)
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CommonOptions:
        return cls(
            workers=getattr(args, "workers", 1),
            device=getattr(args, "device", "auto"),
            overwrite=getattr(args, "overwrite", False),
            shard=getattr(args, "shard", Shard()),
            progress=not getattr(args, "no_progress", False),
        )

    def bar(self, iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
        """A tqdm progress bar that honours ``--no-progress``."""
        return tqdm(iterable, disable=not self.progress, dynamic_ncols=True, **kwargs)


def plan_work(ids: list[str], is_done: Callable[[str], bool], options: CommonOptions,
              done_words: str) -> tuple[list[str], list[str]]:
    """This shard's part of ``ids`` and, of that, the items still to do (all with --overwrite).

    Each skipped item is logged as ``<id>: <done_words>, skipped``.
    """
    mine = options.shard.select(ids)
    todo = [i for i in mine if options.overwrite or not is_done(i)]
    for item in sorted(set(mine) - set(todo)):
        log.info("%s: %s, skipped", item, done_words)
    return mine, todo


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


def write_manifest(folder: str | os.PathLike, stage: str, args: argparse.Namespace,
                   extra: dict | None = None) -> Path:
    """Write ``manifest{shard suffix}.json``: the stage, its arguments and software versions."""
    shard = getattr(args, "shard", Shard())
    path = Path(folder) / f"manifest{shard.suffix}.json"
    manifest = {
        "stage": stage,
        "command": sys.argv,
        "arguments": {k: _jsonable(v) for k, v in vars(args).items()},
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hpasc": hpasc.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": _package_versions(),
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


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run(stage: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> None:
    """Run a stage function and exit: 0 ok, 1 some items failed, 2 unusable input, 130 ^C.

    An :class:`InputError` becomes ``error: <message>`` on one line instead of a traceback.
    """
    setup_logging(args.log_level)
    try:
        status = stage(args) or EXIT_OK
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = EXIT_INPUT_ERROR
    except BrokenProcessPool:
        print("error: a worker process died (out of memory?); finished items are kept, "
              "re-run the same command to continue", file=sys.stderr)
        status = EXIT_SOME_FAILED
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue", file=sys.stderr)
        status = EXIT_INTERRUPTED
    sys.exit(status)
