"""Where HPA's segmentation weight files come from: an explicit path, the cache, or a download
(Zenodo record 4665863, or a mirror). Light to import (no torch): the settings use it."""

from __future__ import annotations

from pathlib import Path

from hpasc.core import weights_cache
from hpasc.core.errors import InputError
from hpasc.core.http import FetchError, HttpPolicy
from hpasc.core.weights_cache import one_line

NUCLEI_WEIGHTS = "dpn_unet_nuclei_v1.pth"
CELL_WEIGHTS = "dpn_unet_cell_3ch_v1.pth"  # the 3-channel (microtubules, ER, nuclei) cell model
# The URLs hpacellseg itself downloads from (hpacellseg/constants.py).
_ZENODO = "https://zenodo.org/record/4665863/files/"
HPA_WEIGHTS: dict[str, str] = {name: _ZENODO + name for name in (NUCLEI_WEIGHTS, CELL_WEIGHTS)}


DEFAULT_POLICY = HttpPolicy()


def default_cache_dir() -> Path:
    """``$HPASC_CACHE/segmentation`` if HPASC_CACHE is set, else ``~/.cache/hpasc/segmentation``."""
    return weights_cache.default_cache_dir("segmentation")


def _url(name: str, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{name}" if base_url else HPA_WEIGHTS[name]


def _missing(cache_dir: Path, base_url: str | None, reason: str) -> InputError:
    """One line: why, which files are missing from where to get them, and where to put them."""
    missing = [n for n in HPA_WEIGHTS if not (cache_dir / n).is_file()]
    files = ", ".join(f"{n} ({_url(n, base_url)})" for n in missing)
    return InputError(f"HPA segmentation weights missing: {reason}; download {files} "
                      f"and place {'it' if len(missing) == 1 else 'them'} in {cache_dir}")


def resolve_weights(name: str, explicit: Path | None, cache_dir: Path, download: bool,
                    base_url: str | None = None, *, policy: HttpPolicy = DEFAULT_POLICY,
                    progress: bool = True) -> Path:
    """The path of weights file ``name`` (a key of HPA_WEIGHTS).

    ``explicit`` if given (it must exist); else the copy in ``cache_dir``; else, if ``download``,
    a fresh download (from ``base_url``/name if given, e.g. a mirror, else Zenodo) saved there
    atomically. Raises a one-line InputError saying what to download and where to put it.
    """
    if name not in HPA_WEIGHTS:
        raise ValueError(f"unknown HPA weights {name!r}; expected one of {', '.join(HPA_WEIGHTS)}")
    if explicit is not None:
        if not Path(explicit).is_file():
            raise InputError(f"{explicit}: {name} weights file does not exist")
        return Path(explicit)
    cache_dir = Path(cache_dir)
    cached = cache_dir / name
    if cached.is_file():
        return cached
    if not download:
        raise _missing(cache_dir, base_url, f"{name} is not in the cache and downloading is off")
    from hpasc.segmentation.weights import load_hpa_state_dict  # checking a download needs torch: only then

    try:
        weights_cache.download(_url(name, base_url), cached, load_hpa_state_dict, policy, progress)
    except (FetchError, ValueError, OSError) as exc:  # ValueError: a malformed base_url
        raise _missing(cache_dir, base_url, f"could not download {name} ({one_line(exc)})") from None
    return cached
