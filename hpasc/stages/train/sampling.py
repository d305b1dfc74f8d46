"""The epoch sampler: a fresh sample of cells each epoch, with a quota per class pool.

After the 4th place of HPA 2021 (see ``sampling.yaml`` for the settings and their meaning). Each
trained class has a pool of cells (those of images labelled with it, plus cells relabelled positive
for it, which also get extra copies); class 18 is the pool of cells whose image has none of the
trained classes. A pool's quota is its weight's share of the epoch. Within a pool the sampler walks
through a shuffled pool, accepting a candidate with probability ``(1 / #image labels) ** exponent``,
and reshuffles to start over whenever the pool runs out before its quota is met.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from hpasc.core.classes import NEGATIVE, NUM_CLASSES, is_class_index, label_matrix
from hpasc.core.errors import InputError

logger = logging.getLogger(__name__)

_KEYS = ("class_weights", "positive_copies", "positive_threshold", "fair_exponent")
_PACKAGED = "packaged hpasc/stages/train/sampling.yaml"


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings, indexed by class 0..18 (18 being the negative pool)."""

    class_weights: tuple[float, ...]
    """Relative quota of each class pool."""
    positive_copies: tuple[int, ...]
    """Extra pool entries of a cell relabelled positive for the class."""
    positive_threshold: float
    """Relabel value from which a cell counts as a relabelled positive."""
    fair_exponent: float
    """Acceptance probability is ``(1 / #image labels) ** fair_exponent``."""


def _load(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = source if mark is None else f"{source}:{mark.line + 1}"
        raise InputError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping with keys {', '.join(_KEYS)}")
    return data


def _mapping(data: dict, key: str, source: str) -> dict:
    section = data.get(key, {})
    if not isinstance(section, dict):
        raise InputError(f"{source}: {key}: expected a mapping of class -> value")
    return section


def _class_index(key: object, where: str) -> int:
    # YAML reads `11:` as an int; a quoted "11" is accepted too since it can only mean the same.
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if not is_class_index(key):
        raise InputError(f"{where}: {key!r} is not a class index 0..{NUM_CLASSES - 1}")
    return key


def _number(value: object, where: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InputError(f"{where}: {value!r} is not a number in [{low}, {high}]")
    return float(value)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: {value!r} is not a whole number >= 0")
    return value


def _parse(data: dict, source: str, base: SamplingConfig | None) -> SamplingConfig:
    unknown = sorted(map(str, set(data) - set(_KEYS)))
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(unknown)}; expected {', '.join(_KEYS)}")

    weights: list[float | None] = list(base.class_weights) if base else [None] * NUM_CLASSES
    for key, value in _mapping(data, "class_weights", source).items():
        where = f"{source}: class_weights"
        weights[_class_index(key, where)] = _number(value, f"{where} {key}", 0.0)

    copies_section = _mapping(data, "positive_copies", source)
    copies: list[int | None] = list(base.positive_copies) if base else [None] * NUM_CLASSES
    if "default" in copies_section:
        copies = [_count(copies_section["default"], f"{source}: positive_copies default")] * NUM_CLASSES
    for key, value in copies_section.items():
        if key != "default":
            where = f"{source}: positive_copies"
            copies[_class_index(key, where)] = _count(value, f"{where} {key}")

    for name, values in (("class_weights", weights), ("positive_copies", copies)):
        missing = [c for c, value in enumerate(values) if value is None]
        if missing:
            raise InputError(f"{source}: {name} lacks class(es) {', '.join(map(str, missing))}")
    if sum(weights) == 0:
        raise InputError(f"{source}: class_weights are all 0")

    threshold = data.get("positive_threshold", base.positive_threshold if base else None)
    exponent = data.get("fair_exponent", base.fair_exponent if base else None)
    return SamplingConfig(
        class_weights=tuple(weights),
        positive_copies=tuple(copies),
        positive_threshold=_number(threshold, f"{source}: positive_threshold", 0.0, 1.0),
        fair_exponent=_number(exponent, f"{source}: fair_exponent", 0.0),
    )


def read_sampling_config(path: str | os.PathLike | None = None) -> SamplingConfig:
    """The packaged ``sampling.yaml``, with the settings of ``path`` (if given) laid over it."""
    packaged = resources.files("hpasc.stages.train").joinpath("sampling.yaml").read_text(encoding="utf-8")
    default = _parse(_load(packaged, _PACKAGED), _PACKAGED, None)
    if path is None:
        return default
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sampling config {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    return _parse(_load(text, str(path)), str(path), default)


def _largest_remainder(total: int, weights: dict[int, float]) -> dict[int, int]:
    """Split ``total`` in proportion to ``weights`` into whole numbers that sum to it exactly."""
    weight_sum = sum(weights.values())
    exact = {c: total * w / weight_sum for c, w in weights.items()}
    shares = {c: math.floor(x) for c, x in exact.items()}
    # Ties go to the lower class index, so the split does not depend on dict order.
    by_remainder = sorted(exact, key=lambda c: (shares[c] - exact[c], c))
    for c in by_remainder[: total - sum(shares.values())]:
        shares[c] += 1
    return shares


class EpochSampler:
    """Draws each epoch's cell indices: per-pool quotas, fair acceptance within a pool."""

    def __init__(self, image_labels: Sequence[Sequence[int]], targets: np.ndarray, relabelled: np.ndarray,
                 outputs: Sequence[int], *, config: SamplingConfig | None = None, epoch_size: int,
                 seed: int = 0) -> None:
        """``targets``/``relabelled`` are :class:`hpasc.stages.train.targets.Targets` ``values``/``relabelled``.

        Only relabelled values count as positives: weak image-level targets are 1.0 for every cell
        of a labelled image, which would give every cell of a pool the same copies.
        """
        config = read_sampling_config() if config is None else config
        if epoch_size < 1:
            raise ValueError(f"epoch size {epoch_size} < 1")
        targets = np.asarray(targets)
        relabelled = np.asarray(relabelled, dtype=bool)
        if targets.shape != (len(image_labels), len(outputs)) or relabelled.shape != targets.shape:
            raise ValueError(f"targets {targets.shape} / relabelled {relabelled.shape} do not match "
                             f"{len(image_labels)} cells x {len(outputs)} outputs")
        self.epoch_size = epoch_size
        self.seed = seed

        labelled = label_matrix(image_labels)
        self._accept = (1.0 / np.maximum(labelled.sum(axis=1), 1)) ** config.fair_exponent
        positive = relabelled & (targets >= config.positive_threshold)
        column = {c: j for j, c in enumerate(outputs)}
        trained = sorted(c for c in column if c != NEGATIVE)
        no_positive = np.zeros(len(image_labels), dtype=bool)

        self._pools: dict[int, np.ndarray] = {}
        for c in [*trained, NEGATIVE]:
            members = labelled[:, c] if c != NEGATIVE else ~labelled[:, trained].any(axis=1)
            extra = positive[:, column[c]] if c in column else no_positive
            copies = np.repeat(np.flatnonzero(extra), config.positive_copies[c])
            self._pools[c] = np.concatenate([np.flatnonzero(members | extra), copies]).astype(np.int64)

        weights = {c: config.class_weights[c] for c, pool in self._pools.items() if pool.size}
        for c in self._pools.keys() - weights.keys():
            logger.debug("class %d has no cells to sample; its share goes to the other classes", c)
        if sum(weights.values()) == 0:
            raise InputError("sampling: every class that has cells has sampling weight 0")
        self._quotas = {c: 0 for c in self._pools} | _largest_remainder(epoch_size, weights)

    def quotas(self) -> dict[int, int]:
        """Cells drawn per epoch from each pool (class 18: negatives); they sum to the epoch size."""
        return dict(self._quotas)

    def pool(self, class_index: int) -> np.ndarray:
        """The cell indices of a class's pool, a relabelled positive once per copy."""
        return self._pools[class_index].copy()

    def sample(self, epoch: int) -> np.ndarray:
        """The epoch's int64 cell indices in random order; the same for the same (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        drawn = [self._draw(self._pools[c], quota, rng) for c, quota in self._quotas.items() if quota]
        cells = np.concatenate(drawn)
        rng.shuffle(cells)
        return cells

    def _draw(self, pool: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
        """``quota`` accepted entries of a walk through ``pool``, reshuffled at every pass."""
        accept = self._accept[pool]
        per_pass = accept.sum()
        taken = []
        missing = quota
        while missing:
            # Enough whole passes to fill the quota most of the time, all drawn at once.
            passes = math.ceil(1.1 * missing / per_pass)
            order = rng.permuted(np.tile(np.arange(pool.size), (passes, 1)), axis=1).ravel()
            kept = order[rng.random(order.size) < accept[order]][:missing]
            taken.append(kept)
            missing -= kept.size
        return pool[np.concatenate(taken)]
