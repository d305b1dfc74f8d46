"""The 4th place's pickled pseudo-label sets (``auto-relabel/{c}.p``): a Python ``set`` of cell
ids. Pickles are untrusted files: the unpickler here resolves no global at all, so a pickle can
build only plain containers and strings, never call anything."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

from hpasc.core.errors import InputError


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"refuses the global {module}.{name}")


def read_id_set(path: str | os.PathLike) -> frozenset[str]:
    """The cell ids of a pickled set (or list, or tuple) of strings; InputError for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        value = _NoGlobals(io.BytesIO(data)).load()
    except Exception as exc:  # a hostile or broken pickle can raise nearly anything
        raise InputError(f"{path}: not a pickled set of cell ids ({exc})") from None
    if not isinstance(value, set | frozenset | list | tuple) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{path}: not a pickled set of cell ids (holds a {type(value).__name__})")
    return frozenset(value)
