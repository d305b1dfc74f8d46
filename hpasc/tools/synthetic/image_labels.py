"""The classes of a synthetic image and of its cells: drawn or forced image classes under the
Negative and Mitotic spindle rules, which cells divide, and which labels each cell carries."""

from __future__ import annotations

import numpy as np

from hpasc.core.classes import MITOTIC_SPINDLE, NEGATIVE, NUM_CLASSES, is_class_index
from hpasc.tools.synthetic.layout import Cell

# Classes that still make sense on a rounded mitotic cell, whose nucleus has become a
# chromosome plate and whose microtubules form the spindle.
MITOSIS_COMPATIBLE = frozenset({6, 9, 13, 14, 16, 17, NEGATIVE})


def choose_classes(rng: np.random.Generator) -> tuple[int, ...]:
    """1-3 classes drawn uniformly, made consistent with the Negative and spindle rules."""
    count = int(rng.choice(3, p=[0.5, 0.35, 0.15])) + 1
    chosen = {int(c) for c in rng.choice(NUM_CLASSES, size=count, replace=False)}
    if NEGATIVE in chosen:
        return (NEGATIVE,)
    if chosen == {MITOTIC_SPINDLE}:
        others = [c for c in range(NUM_CLASSES) if c not in (MITOTIC_SPINDLE, NEGATIVE)]
        chosen.add(int(rng.choice(others)))
    return tuple(sorted(chosen))


def check_classes(classes: tuple[int, ...]) -> tuple[int, ...]:
    """Forced classes, sorted without repeats, or ValueError where they break the rules."""
    chosen = tuple(sorted({int(c) for c in classes}))
    if not chosen or not all(is_class_index(c) for c in chosen):
        raise ValueError(f"classes must be a non-empty set of indices 0..{NUM_CLASSES - 1}")
    if NEGATIVE in chosen and len(chosen) > 1:
        raise ValueError("Negative (18) cannot be combined with other classes")
    if chosen == (MITOTIC_SPINDLE,):
        raise ValueError("Mitotic spindle (11) needs another class for the interphase cells")
    return chosen


def mitotic_labels(chosen: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Labels of the dividing cells of the image (one entry per dividing cell)."""
    if MITOTIC_SPINDLE in chosen:
        return [(MITOTIC_SPINDLE,)] * int(rng.integers(1, 3))
    # Some other images hold a dividing cell too, so that a round cell with a chromosome plate
    # does not by itself mean "Mitotic spindle".
    compatible = tuple(c for c in chosen if c in MITOSIS_COMPATIBLE)
    if compatible and rng.random() < 0.3:
        return [compatible]
    return []


def cell_labels(plan: list[Cell], chosen: tuple[int, ...], mitotic: list[tuple[int, ...]],
                rng: np.random.Generator) -> dict[int, tuple[int, ...]]:
    """Most interphase cells carry all the image's classes, some a subset; each class one cell
    at least."""
    interphase_classes = [c for c in chosen if c != MITOTIC_SPINDLE]
    labels: dict[int, tuple[int, ...]] = {}
    dividing = iter(mitotic)
    interphase = []
    for index, cell in enumerate(plan, start=1):
        if cell.mitotic:
            labels[index] = next(dividing)
            continue
        interphase.append(index)
        if len(interphase_classes) > 1 and rng.random() < 0.25:
            keep = int(rng.integers(1, len(interphase_classes)))
            labels[index] = tuple(sorted(rng.choice(interphase_classes, keep, replace=False)))
        else:
            labels[index] = tuple(interphase_classes)
    carried = set().union(*(labels[i] for i in interphase))
    for missing in sorted(set(interphase_classes) - carried) if interphase else ():
        index = int(rng.choice(interphase))
        labels[index] = tuple(sorted({*labels[index], missing}))
    return {i: tuple(int(c) for c in labels[i]) for i in labels}
