"""Scoring the cells of a dataset with a model: the loader over chosen rows feeding
:meth:`~hpasc.models.runner.ModelRunner.score` (pseudo-labels, cell-level evaluation, the label tool)."""

from __future__ import annotations

import numpy as np

from hpasc.core.runtime import CommonOptions
from hpasc.models.runner import ModelRunner
from hpasc.stages.train.data import CellSet, TileReader, fixed_batches, loader_workers


def score_rows(runner: ModelRunner, cells: CellSet, rows: np.ndarray, batch_size: int,
               options: CommonOptions) -> np.ndarray:
    """The (len(rows), 19) probabilities of cells ``rows``, in that order (InputError for tiles cut
    another way than the model's training tiles)."""
    for store in cells.stores:
        runner.check_tiles(store)
    workers = loader_workers(options.workers, runner.device)
    with TileReader(cells, runner.spec.tile_size, batch_size, workers, runner.device) as reader:
        batches = options.bar(reader.batches(fixed_batches(rows, batch_size)), desc="scoring cells", unit="batch")
        return runner.score(tiles for tiles, _ in batches)
