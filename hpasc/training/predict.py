"""Scoring the cells of a dataset with a model: the loader over chosen rows feeding
:func:`~hpasc.models.scoring.score_tiles` (validation, pseudo-labels, cell-level evaluation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hpasc.models.scoring import score_tiles
from hpasc.models.spec import ModelSpec
from hpasc.runtime import CommonOptions
from hpasc.training.data import CellSet, TileDataset, check_tiles_for, create_loader, fixed_batches


def score_rows(model: nn.Module, spec: ModelSpec, cells: CellSet, rows: np.ndarray, batch_size: int,
               options: CommonOptions, device: torch.device | str) -> np.ndarray:
    """The (len(rows), 19) probabilities of cells ``rows``, in that order (InputError for tiles cut
    another way than the model's training tiles)."""
    for store in cells.stores:
        check_tiles_for(store, spec)
    loader = create_loader(TileDataset(cells, spec.tile_size), fixed_batches(rows, batch_size),
                           options.workers, pin_memory=torch.device(device).type == "cuda")
    batches = options.bar(loader, desc="scoring cells", unit="batch")
    return score_tiles(model, spec, (tiles for tiles, _ in batches), device)
