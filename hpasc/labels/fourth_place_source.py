"""Where the 4th place's published label folder comes from and where it is found.

Their repository carries no licence file, so the project ships none of their labels: ``hpasc-labels
fetch`` downloads the folder's files from a pinned commit of their repository into the user's cache,
counts every file's entries (lines, or pickled ids) with the format's own reader and keeps the
folder only when each count is that commit's. Tools and tests find it through
:data:`ENV_VAR` or that cache (:func:`find_fourth_place_labels`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from hpasc.core import atomic, weights_cache
from hpasc.core.errors import InputError
from hpasc.core.http import FetchError, HttpPolicy
from hpasc.core.weights_cache import one_line
from hpasc.labels.files import read_label_lines
from hpasc.labels.formats import FOURTH_PLACE
from hpasc.labels.pickles import read_id_set

log = logging.getLogger(__name__)

REPOSITORY = "CroDoc/HPA2021-data-centric-approach"
COMMIT = "591724b37e7c2cff24daf1d198775e4ff61bfc6d"
BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}"
ENV_VAR = "HPASC_4TH_PLACE_LABELS"
SOURCE_RECORD = "source.json"
FETCH_COMMAND = "hpasc-labels fetch"

PINNED_ENTRIES: dict[str, int] = {
    "relabel/1.txt": 39989, "relabel/6.txt": 2884, "relabel/8.txt": 34140, "relabel/9.txt": 42738,
    "relabel/11.txt": 9480, "relabel/12.txt": 22068, "relabel/15.txt": 11623,
    "validation/1.txt": 3017, "validation/2.txt": 3244, "validation/3.txt": 3126, "validation/4.txt": 2337,
    "validation/5.txt": 3190, "validation/6.txt": 1314, "validation/7.txt": 2206, "validation/8.txt": 3068,
    "validation/9.txt": 3063, "validation/10.txt": 2025, "validation/12.txt": 2029, "validation/15.txt": 2135,
    "validation/17.txt": 2151,
    "auto-positive-relabel/6.p": 21953,
    "auto-relabel/0.p": 80415, "auto-relabel/1.p": 14982, "auto-relabel/2.p": 30327, "auto-relabel/3.p": 12775,
    "auto-relabel/4.p": 20139, "auto-relabel/5.p": 24125, "auto-relabel/6.p": 9268, "auto-relabel/7.p": 22634,
    "auto-relabel/10.p": 3556, "auto-relabel/13.p": 27270, "auto-relabel/14.p": 16890, "auto-relabel/17.p": 28965,
    "auto-relabel2/1.p": 2198, "auto-relabel2/6.p": 7240, "auto-relabel2/12.p": 26364,
}
"""Each file of the folder at :data:`COMMIT` → its entries: 544,928 in all, over 17 classes."""
PINNED_TOTAL = sum(PINNED_ENTRIES.values())


def default_folder() -> Path:
    """Where ``hpasc-labels fetch`` puts the folder: ``{cache}/labels/4th-place-{commit}``."""
    return weights_cache.default_cache_dir("labels") / f"4th-place-{COMMIT[:7]}"


def find_fourth_place_labels() -> Path | None:
    """The folder :data:`ENV_VAR` names (whether or not it exists: the user asked for it), else the
    fetched copy in the cache, else None."""
    named = os.environ.get(ENV_VAR)
    if named:
        return Path(named).expanduser()
    cached = default_folder()
    return cached if cached.is_dir() else None


def absent_reason() -> str:
    """One line saying how to get the folder, for whatever needs it and found none."""
    return (f"the 4th place's labels are absent: run `{FETCH_COMMAND}` (into {default_folder()}) "
            f"or set {ENV_VAR} to their folder")


def count_mismatches(folder: Path) -> list[str]:
    """How ``folder``'s files differ from the pinned commit's, one phrase each (none: it is theirs)."""
    found = {summary.source: summary.entries for summary in FOURTH_PLACE.sources(folder)}
    differences = [f"{name} is missing" for name in PINNED_ENTRIES if name not in found]
    differences += [f"{name} has {count} entries where the pinned commit's has {PINNED_ENTRIES[name]}"
                    for name, count in found.items() if name in PINNED_ENTRIES and count != PINNED_ENTRIES[name]]
    differences += [f"{name} is not in the pinned commit" for name in found if name not in PINNED_ENTRIES]
    return differences


def check_fourth_place_folder(folder: Path, what: str | None = None) -> None:
    """InputError, in one line naming ``what`` (default: the folder), unless every file of
    ``folder`` reads and holds the pinned commit's entries."""
    differences = count_mismatches(folder)
    if differences:
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise InputError(f"{what or folder} is not the 4th place's labels of {REPOSITORY}@{COMMIT[:7]}: "
                         f"{differences[0]}{more}")


def _readable(path: Path) -> None:
    """A downloaded file reads as its kind (InputError otherwise: a login page, a truncated body)."""
    if path.suffix == ".p":
        read_id_set(path)
    else:
        read_label_lines(path)


def fetch_fourth_place_labels(target: Path, base_url: str = BASE_URL, *, overwrite: bool = False,
                              policy: HttpPolicy = HttpPolicy(), progress: bool = True) -> Path:
    """Download the folder's files from ``base_url`` (their repository at :data:`COMMIT`, or a
    mirror laid out the same way) into ``target`` and return it.

    The files gather in a hidden ``.{target}.partial`` folder beside it (an interrupted fetch goes
    on from the files it has) that becomes ``target`` only when every count is the pinned one; a
    download whose counts differ is removed and refused in one line. An existing ``target`` is
    checked and kept unless ``overwrite``.
    """
    if target.is_dir() and not overwrite:
        check_fourth_place_folder(target)
        log.info("%s holds the 4th place's labels already (--overwrite fetches them again)", target)
        return target
    partial = target.with_name(f".{target.name}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    names = [name for name in PINNED_ENTRIES if not (partial / name).is_file()]
    log.info("fetching %d files of the 4th place's labels from %s", len(names), base_url)
    for name in tqdm(names, desc="4th-place labels", unit="file", disable=not progress):
        try:
            weights_cache.save(f"{base_url.rstrip('/')}/{name}", partial / name, _readable, policy)
        except (FetchError, ValueError) as exc:  # ValueError: a malformed base URL
            raise InputError(f"could not fetch {name} ({one_line(exc)}); the files fetched so far stay in "
                             f"{partial}: run the same command again to go on") from None
    try:
        check_fourth_place_folder(partial, f"the download from {base_url}")
    except InputError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise InputError(f"{exc}; refused, nothing kept") from None
    record = {"repository": REPOSITORY, "commit": COMMIT, "url": base_url}
    atomic.write_text(partial / SOURCE_RECORD, json.dumps(record, indent=1) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return target
