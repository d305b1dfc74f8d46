"""Agreement between two folders of cell masks: per image, the F1 of cells matched at IoU >= 0.6
(the competition's threshold); ``hpasc-agreement`` prints it."""

from __future__ import annotations

from pathlib import Path

from hpasc.core.errors import InputError
from hpasc.core.images import read_label_image
from hpasc.submission.matching import MatchResult, match_instances


def compare_folders(truth: Path, pred: Path, truth_suffix: str = "",
                    iou_threshold: float = 0.6) -> dict[str, MatchResult]:
    """Match ``{truth}/{ID}{truth_suffix}.png`` with ``{pred}/{ID}.png`` for every ID in ``pred``."""
    if not pred.is_dir():
        raise InputError(f"mask folder {pred} does not exist")
    results = {}
    for path in sorted(pred.glob("*.png")):
        reference = truth / f"{path.stem}{truth_suffix}.png"
        if not reference.is_file():
            raise InputError(f"{path.stem}: no reference mask {reference}")
        results[path.stem] = match_instances(read_label_image(reference), read_label_image(path),
                                             iou_threshold)
    if not results:
        raise InputError(f"no masks (*.png) in {pred}")
    return results
