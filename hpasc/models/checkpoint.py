"""Checkpoints: one ``.pt`` file that rebuilds a trained model without any flags.

A checkpoint is a plain dict, read with ``torch.load(weights_only=True)`` so that opening one
runs no code::

    format          CHECKPOINT_FORMAT
    model_spec      ModelSpec.to_dict(): architecture, input channels, outputs, tile size, scale
    model_state     the model's state_dict, without DDP's ``module.`` prefix
    epoch           the number of epochs completed
    metrics         one dict per epoch so far
    args            the record of the runs that made it, as JSON-able values (training.config.RunRecord)
    training_state  (optional) whatever the trainer needs to resume: optimizer, scheduler and
                    scaler state_dicts, RNG states...

Every value must be a plain container (dict, list, tuple), a tensor, a Python number, string,
bool or None: :func:`save_checkpoint` refuses anything else (a numpy scalar, say) before writing,
rather than leaving a file that cannot be loaded back.
"""

from __future__ import annotations

import collections
import io
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.weights_cache import one_line
from hpasc.models.precision import Precision
from hpasc.models.registry import create_model
from hpasc.models.spec import ModelSpec

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model_spec", "model_state", "epoch", "metrics", "args")
_DDP_PREFIX = "module."
_PLAIN_SCALARS = (int, float, bool, str, type(None))


def _check_plain(value: object, where: str) -> None:
    """Raise TypeError naming the first value that weights_only loading would refuse."""
    if type(value) in (dict, collections.OrderedDict):
        for key, item in value.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, Tensor) and type(value) not in _PLAIN_SCALARS:
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint "
                        f"holds only dicts, lists, tuples, tensors and plain Python scalars")


def unwrapped_state(model: nn.Module) -> dict[str, Tensor]:
    """The state_dict of ``model``, or of the model inside a DDP/DataParallel wrapper."""
    inner = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) \
        else model
    return inner.state_dict()


def make_checkpoint(model: nn.Module, spec: ModelSpec, epoch: int, metrics: list[dict[str, Any]],
                    args: dict[str, Any], training_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint dict for ``model`` (wrapped or not) after ``epoch`` epochs."""
    checkpoint = {"format": CHECKPOINT_FORMAT, "model_spec": spec.to_dict(),
                  "model_state": unwrapped_state(model), "epoch": epoch, "metrics": list(metrics),
                  "args": dict(args)}
    if training_state is not None:
        checkpoint["training_state"] = training_state
    return checkpoint


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically and durably, creating its folder.

    Raises ValueError for a dict without the checkpoint keys and TypeError for a value that
    could not be loaded back with ``weights_only=True``; nothing is written then.
    """
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"not a checkpoint: missing {', '.join(missing)}")
    _check_plain(checkpoint, "checkpoint")
    # Serialised in memory first: torch.save into a file turns a full disk into a RuntimeError
    # from its C++ writer, while a plain write raises the OSError that names the reason.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic.atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write(buffer.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())  # the data is on disk before the rename makes it the checkpoint
    # Make the rename itself survive a power cut, so a resumed run finds the file it was told of.
    directory = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors onto ``map_location``).

    Raises a one-line InputError naming ``path`` if it is missing, not a torch file, truncated,
    or not a checkpoint of a format this code reads.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # anything a truncated or foreign file can raise
        raise InputError(f"{path}: not a readable checkpoint ({one_line(exc)})") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise InputError(f"{path}: not an hpasc checkpoint (no format field)")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {checkpoint['format']!r} is not the one this version "
                         f"reads ({CHECKPOINT_FORMAT})")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise InputError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    try:
        ModelSpec.from_dict(checkpoint["model_spec"])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return checkpoint


def _strip_ddp_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(key.startswith(_DDP_PREFIX) for key in state):
        return {key[len(_DDP_PREFIX):]: value for key, value in state.items()}
    return state


def _misfits(state: object, expected: dict[str, Tensor]) -> list[str]:
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        return ["it is not a state_dict"]
    problems = [f"missing {key}" for key in expected if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in expected]
    problems += [f"{key} has shape {list(value.shape)}, expected {list(expected[key].shape)}"
                 for key, value in state.items() if key in expected and value.shape != expected[key].shape]
    return problems


def build_model(checkpoint: dict[str, Any], device: str | torch.device = "cpu",
                precision: Precision = Precision()) -> tuple[nn.Module, ModelSpec]:
    """The checkpoint's model with its weights, on ``device`` in ``precision``'s memory layout, in
    eval mode, and its spec.

    Raises InputError if ``model_spec`` is invalid or ``model_state`` does not fit it.
    """
    spec = ModelSpec.from_dict(checkpoint["model_spec"])
    model = create_model(spec.arch, len(spec.outputs), spec.in_channels, spec.tile_size)
    state = checkpoint["model_state"]
    state = _strip_ddp_prefix(state) if isinstance(state, dict) else state
    problems = _misfits(state, model.state_dict())
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError(f"the checkpoint's model_state does not fit its model_spec: "
                         f"{'; '.join(problems[:3])}{more}")
    model.load_state_dict(state, strict=True)
    # The memory layout scoring.prepare_batch gives the input.
    return model.to(device, memory_format=precision.memory_format(device)).eval(), spec


def checkpoint_path(save_dir: str | os.PathLike, name: str, epoch: int) -> Path:
    """``{save_dir}/{name}-{epoch}.pt``, e.g. ``models/b0-bce-12.pt``."""
    return Path(save_dir) / f"{name}-{epoch}.pt"


def _run_epochs(save_dir: Path, name: str) -> list[tuple[int, Path]]:
    if not save_dir.is_dir():
        return []
    # A full match on the whole name: "b0" must not pick up run "b0-bce"'s files, nor temporaries.
    pattern = re.compile(re.escape(name) + r"-(\d+)\.pt")
    return sorted((int(match.group(1)), path) for path in save_dir.iterdir()
                  if (match := pattern.fullmatch(path.name)) and path.is_file())


def run_checkpoints(save_dir: str | os.PathLike, name: str) -> list[Path]:
    """Every checkpoint ``{name}-{epoch}.pt`` of run ``name`` in ``save_dir``, by epoch."""
    return [path for _, path in _run_epochs(Path(save_dir), name)]


def find_latest(save_dir: str | os.PathLike, name: str) -> tuple[Path, int] | None:
    """The checkpoint of run ``name`` in ``save_dir`` with the highest epoch, and that epoch."""
    found = _run_epochs(Path(save_dir), name)
    if not found:
        return None
    epoch, path = found[-1]
    return path, epoch
