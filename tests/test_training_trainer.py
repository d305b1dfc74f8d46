"""Small pure parts of the training loop: early stopping, the tile size, the fine-tuning sample,
epoch seeds, the validation AP over counted pairs, and the metrics CSV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hpasc.stages.train.finetune import finetune_sample
from hpasc.stages.train.metrics import class_average_precision, write_metrics_csv
from hpasc.stages.train.stage import epoch_seed, resolve_tile_size, stopped_early


def history(*scores: float | None) -> list[dict]:
    return [{"epoch": i + 1, "val_map": s} for i, s in enumerate(scores)]


def test_early_stopping_waits_patience_epochs_without_a_better_map() -> None:
    assert not stopped_early(history(0.1, 0.2, 0.3), patience=2)
    assert not stopped_early(history(0.3, 0.2), patience=2)  # not yet patience epochs after the best
    assert stopped_early(history(0.3, 0.2, 0.25), patience=2)
    assert not stopped_early(history(0.3, 0.2, 0.31), patience=2)
    assert not stopped_early(history(0.3, 0.2, 0.1), patience=0)  # off
    assert not stopped_early(history(None, math.nan, None), patience=1)  # nothing validated


def test_tile_size_defaults_to_the_architecture_capped_by_the_store() -> None:
    assert resolve_tile_size(None, "efficientnet-b0", 512) == 512
    assert resolve_tile_size(None, "efficientnet-b0", 128) == 128
    assert resolve_tile_size(None, "efficientnet-b2", 512) == 260
    assert resolve_tile_size(64, "efficientnet-b0", 128) == 64


def test_finetune_sample_repeats_relabelled_cells_only() -> None:
    rows = finetune_sample(np.array([0, 1, 2, 3]), np.array([2, 7]), repeats=3, seed=0)
    counts = pd.Series(rows).value_counts().to_dict()
    assert counts == {0: 1, 1: 1, 3: 1, 2: 3, 7: 3}
    assert rows.tolist() != sorted(rows.tolist())
    assert (finetune_sample(np.array([0, 1, 2, 3]), np.array([2, 7]), 3, seed=0) == rows).all()


def test_epoch_seeds_differ_by_epoch_rank_and_stream() -> None:
    seeds = {epoch_seed(0, e, r, s) for e in range(3) for r in range(2) for s in range(2)}
    assert len(seeds) == 12 and epoch_seed(0, 1, 0) == epoch_seed(0, 1, 0)


def test_metrics_csv_has_one_row_per_epoch_and_blank_undefined_ap(tmp_path) -> None:
    path = tmp_path / "m.csv"
    write_metrics_csv(path, [{"epoch": 1, "lr": 3e-4, "train_loss": 0.5, "val_loss": None, "val_map": None},
                             {"epoch": 2, "lr": 1e-5, "train_loss": 0.25, "val_map": 0.5,
                              "ap": {"3": 0.75}}])
    table = pd.read_csv(path)
    assert table["epoch"].tolist() == [1, 2]
    assert math.isnan(table["val_map"][0]) and table["val_map"][1] == 0.5
    assert table["ap_3"][1] == 0.75 and table["ap_4"].isna().all()


def test_average_precision_counts_only_the_marked_pairs() -> None:
    probabilities = np.zeros((4, 19))
    probabilities[:, 1] = [0.9, 0.8, 0.7, 0.1]
    targets = np.array([[0.0], [1.0], [1.0], [0.0]])
    assert class_average_precision(probabilities, targets, [1])[1] < 1.0  # the 0.9 negative ranks first
    counted = np.array([[False], [True], [True], [True]])  # that cell's class 1 is not measured
    assert class_average_precision(probabilities, targets, [1], counted) == {1: 1.0}
    assert class_average_precision(probabilities, targets, [1], ~counted) == {}  # no positive left
