"""Label folders (SPEC): ``{class}.txt`` files of lines ``{cell_id} {value}``, their reader and writer.

The value is either an integer score 0..5 from manual relabelling, mapped to a soft label by a
:class:`ScoreMap`, or a soft value written with a decimal point (pseudo-label sets: ``0.01`` /
``0.99``). A cell listed several times takes its last value.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import yaml

from hpasc.core import atomic
from hpasc.core.classes import NUM_CLASSES, is_class_index
from hpasc.core.errors import InputError
from hpasc.labels.files import SCORES, label_lines, read_label_lines

logger = logging.getLogger(__name__)

DEFAULT_SCORE_MAP: dict[int, float] = {0: 0.0, 1: 0.0, 2: 0.2, 3: 0.7, 4: 0.9, 5: 1.0}
_LABEL_FILE = re.compile(r"(-?[0-9]+)\.txt")

LabelSet = dict[int, dict[str, float]]
"""Class index -> cell id -> soft value."""


def _default_scores() -> Mapping[int, float]:
    return MappingProxyType(dict(DEFAULT_SCORE_MAP))


@dataclass(frozen=True)
class ScoreMap:
    """The soft label of each manual score 0..5; a class's overrides replace only the scores they name."""

    default: Mapping[int, float] = field(default_factory=_default_scores)
    per_class: Mapping[int, Mapping[int, float]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        missing = sorted(set(SCORES) - set(self.default))
        if missing:
            raise ValueError(f"score map lacks score(s) {missing}")

    def soft(self, class_index: int, score: int) -> float:
        """The soft label of ``score`` for class ``class_index``."""
        return float(self.per_class.get(class_index, {}).get(score, self.default[score]))


def _int_key(key: object, allowed: range, where: str) -> int:
    # YAML reads `11:` as an int; a quoted "11" is accepted too since it can only mean the same.
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key not in allowed:
        raise InputError(f"{where}: {key!r} is not an integer in {allowed.start}..{allowed.stop - 1}")
    return key


def _score_values(section: object, where: str) -> dict[int, float]:
    if not isinstance(section, dict):
        raise InputError(f"{where}: expected a mapping of score -> soft label")
    values = {}
    for key, value in section.items():
        score = _int_key(key, SCORES, f"{where} score")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise InputError(f"{where} score {score}: soft label {value!r} is not a number in [0, 1]")
        values[score] = float(value)
    return values


def read_score_map(path: str | os.PathLike) -> ScoreMap:
    """Read ``{default: {1: 0.0, ...}, classes: {11: {3: 0.8}}}`` (both keys optional).

    Scores the file leaves out keep :data:`DEFAULT_SCORE_MAP`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"score map {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not a readable YAML file ({exc})".replace("\n", " ")) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with keys 'default' and/or 'classes'")
    unknown = sorted(map(str, set(data) - {"default", "classes"}))
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}; expected 'default' and/or 'classes'")
    default = {**DEFAULT_SCORE_MAP, **_score_values(data.get("default", {}), f"{path}: default")}
    classes = data.get("classes", {})
    if not isinstance(classes, dict):
        raise InputError(f"{path}: classes: expected a mapping of class -> scores")
    per_class = {}
    for key, section in classes.items():
        class_index = _int_key(key, range(NUM_CLASSES), f"{path}: classes")
        per_class[class_index] = MappingProxyType(_score_values(section, f"{path}: class {class_index}"))
    return ScoreMap(MappingProxyType(default), MappingProxyType(per_class))


def _soft_value(token: str, class_index: int, score_map: ScoreMap, where: str) -> float:
    try:
        score = int(token)
    except ValueError:
        pass
    else:
        if score not in SCORES:
            raise InputError(f"{where}: score {score} outside 0..5")
        return score_map.soft(class_index, score)
    try:
        value = float(token)
    except ValueError:
        raise InputError(f"{where}: {token!r} is neither a score 0..5 nor a soft value in [0, 1]") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise InputError(f"{where}: soft value {token} outside [0, 1]")
    return value


def _read_label_file(path: Path, class_index: int, score_map: ScoreMap) -> dict[str, float]:
    return {cell_id: _soft_value(token, class_index, score_map, where)
            for cell_id, token, where in read_label_lines(path)}


def read_label_folder(folder: str | os.PathLike, score_map: ScoreMap | None = None) -> LabelSet:
    """Read every ``{class}.txt`` of ``folder`` into class -> cell id -> soft value.

    Other ``.txt`` files are skipped with a warning (a misnamed label file); anything else (a
    manifest, a summary) silently. An empty label file gives its class an empty mapping.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"label folder {folder} does not exist")
    score_map = ScoreMap() if score_map is None else score_map
    labels: LabelSet = {}
    for path in sorted(folder.glob("*.txt")):
        match = _LABEL_FILE.fullmatch(path.name)
        if match is None or not path.is_file():
            logger.warning("ignoring %s: label files are named {class}.txt", path)
            continue
        class_index = int(match.group(1))
        if not is_class_index(class_index):
            raise InputError(f"{path}: class {class_index} outside 0..{NUM_CLASSES - 1}")
        if class_index in labels:
            raise InputError(f"{path}: a second label file for class {class_index}")
        labels[class_index] = _read_label_file(path, class_index, score_map)
    return dict(sorted(labels.items()))


def merge_label_sets(sets: Sequence[LabelSet]) -> LabelSet:
    """Merge label sets; a later set's value wins for the same (class, cell)."""
    merged: LabelSet = {}
    for label_set in sets:
        for class_index, cells in label_set.items():
            merged.setdefault(class_index, {}).update(cells)
    return dict(sorted(merged.items()))


def format_soft(value: float) -> str:
    """The shortest text that reads back as exactly ``value``, always with a decimal point."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"soft value {value} outside [0, 1]")
    # Positional, because repr() would write 1e-05, which has no decimal point.
    return np.format_float_positional(value, trim="0")


def write_label_folder(folder: str | os.PathLike, labels: LabelSet) -> None:
    """Write ``{class}.txt`` per class (sorted by cell id, each atomically) for :func:`read_label_folder`."""
    folder = Path(folder)
    for class_index, cells in sorted(labels.items()):
        if not is_class_index(class_index):
            raise ValueError(f"class {class_index} outside 0..{NUM_CLASSES - 1}")
        text = label_lines((cell_id, format_soft(cells[cell_id])) for cell_id in sorted(cells))
        atomic.write_text(folder / f"{class_index}.txt", text)
