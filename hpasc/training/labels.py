"""Where a run's soft labels come from: pseudo-label folders, then manual relabel folders (a
manual score beats a pseudo-label of the same cell and class), mapped through a score map."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpasc.training.data import CellSet
from hpasc.training.targets import ScoreMap, Targets, build_targets, merge_label_sets, read_label_folder, read_score_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSources:
    relabel: tuple[Path, ...] = ()
    pseudo: tuple[Path, ...] = ()
    score_map: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"relabel": [str(Path(p).resolve()) for p in self.relabel],
                "pseudo": [str(Path(p).resolve()) for p in self.pseudo],
                "score_map": str(Path(self.score_map).resolve()) if self.score_map else None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabelSources:
        return cls(tuple(map(Path, values.get("relabel", ()))), tuple(map(Path, values.get("pseudo", ()))),
                   Path(values["score_map"]) if values.get("score_map") else None)

    def plus(self, relabel: Sequence[Path], pseudo: Sequence[Path]) -> LabelSources:
        """These sources with more folders appended (later folders win)."""
        return LabelSources(self.relabel + tuple(relabel), self.pseudo + tuple(pseudo), self.score_map)


def load_targets(cells: CellSet, outputs: Sequence[int], sources: LabelSources) -> Targets:
    """The cells' soft targets: image-level labels, overridden by the label folders."""
    score_map = read_score_map(sources.score_map) if sources.score_map else ScoreMap()
    sets = [read_label_folder(folder, score_map) for folder in (*sources.pseudo, *sources.relabel)]
    targets = build_targets(cells.cell_ids, cells.image_labels, outputs, merge_label_sets(sets))
    if sets:
        log.info("soft labels: %d (cell, class) values from %d folder(s)", targets.applied, len(sets))
    if targets.unknown:
        log.warning("%d labelled (cell, class) entries name cells that are not in the dataset's "
                    "split; they are ignored", targets.unknown)
    return targets
