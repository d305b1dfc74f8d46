"""finetuner.py's run: one pass over the validation cells of a trained checkpoint's split.

As the 4th place: the cells a person relabelled are repeated (``relabel_repeats`` times each),
every other kept validation cell is seen once, Adam at a small constant learning rate (3e-5), the
checkpoint's own loss and augmentation unless overridden. The result is written as
``{save}/{checkpoint's file name}``: a checkpoint of the same kind, which infer.py loads as any
other, with the fine-tuning recorded in its metrics and arguments. It is not validated: it has
now seen the validation cells.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.runtime import log_done
from hpasc.models import checkpoint as ckpt
from hpasc.models.runner import ModelRunner
from hpasc.cellstore.split import Split
from hpasc.stages.train.config import Execution, FinetuneConfig, RunRecord
from hpasc.stages.train.data import CellSet, EpochBatches
from hpasc.stages.train.engine import Engine, adam, place_model
from hpasc.stages.train.label_sources import CellLabels
from hpasc.stages.train.stage import labelled_cells, seed_epoch, tile_reader

log = logging.getLogger(__name__)


def finetune_sample(kept: np.ndarray, relabelled: np.ndarray, repeats: int, seed: int) -> np.ndarray:
    """Row indices of the pass: each relabelled row ``repeats`` times, each other kept row once,
    shuffled (seeded)."""
    plain = np.setdiff1d(kept, relabelled)
    rows = np.concatenate([plain, np.repeat(relabelled, repeats)]).astype(np.int64)
    np.random.default_rng(seed).shuffle(rows)
    return rows


def finetune(config: FinetuneConfig, execution: Execution) -> Path | None:
    """Fine-tune; the written checkpoint, or None when it existed already (without --overwrite)."""
    out = Path(config.save_dir) / Path(config.checkpoint).name
    atomic.remove_abandoned(config.save_dir)
    if out.exists() and not execution.options.overwrite:
        log.info("%s exists, skipped (--overwrite to redo it)", out)
        log_done("0 checkpoints fine-tuned, 1 fine-tuned before", 0, out)
        return None
    runner = ModelRunner.load(config.checkpoint)  # placed on the device, in its precision, by place_model
    record = RunRecord.from_checkpoint(runner.checkpoint, config.checkpoint)
    if config.dataset is not None and Path(config.dataset).resolve() != Path(record.train.dataset).resolve():
        log.warning("%s was trained on %s; fine-tuning it on %s, another dataset (its cells, split and labels "
                    "are this one's)", config.checkpoint, record.train.dataset, config.dataset)
    config = config.resolved(record.train)
    sources = record.train.labels.plus(config.relabel, config.pseudo)
    split, cells, labels = labelled_cells(config.dataset, runner.spec.outputs, sources)
    for store in cells.stores:
        runner.check_tiles(store)
    rows, relabelled = _pass_rows(config, split, cells, labels)
    model = place_model(runner.model, execution.process, execution.precision)
    engine = Engine(model, runner.spec, adam(model, config.lr, execution.process.device), None, config.loss,
                    config.augment, execution.process, execution.precision)
    batches = EpochBatches(config.batch_size, drop_last=False)
    batches.set_indices(rows[execution.process.rank::execution.process.world_size])
    generator = seed_epoch(config.seed, 0, execution.process.rank)
    with tile_reader(cells, runner.spec.tile_size, config.batch_size, execution) as reader:
        train_loss = execution.process.mean(engine.train_epoch(reader.batches(batches),
                                                             torch.from_numpy(labels.targets.values), generator,
                                                             execution.options, "fine-tuning"))
    if execution.process.is_main:
        source = runner.checkpoint
        entry = {"epoch": source["epoch"], "stage": "finetune", "lr": config.lr, "train_loss": train_loss,
                 "train_cells": int(rows.size)}
        finetuned = RunRecord(record.train, config).to_dict()
        ckpt.save_checkpoint(out, ckpt.make_checkpoint(engine.model, runner.spec, source["epoch"],
                                                       [*source["metrics"], entry], finetuned))
        log_done(f"{Path(config.checkpoint).name} fine-tuned on {rows.size} cells ({relabelled} relabelled), "
                 f"train loss {train_loss:.4f}", 0, out)
    execution.process.barrier()
    return out


def _pass_rows(config: FinetuneConfig, split: Split, cells: CellSet, labels: CellLabels) -> tuple[np.ndarray, int]:
    """The rows of the pass (:func:`finetune_sample`) and how many relabelled cells it repeats."""
    if labels.validation_rows is not None:  # the labels' own validation set: every cell of it scored
        relabelled = kept = labels.validation_rows
    else:
        validation = cells.rows_of_images(split.validation_images)
        relabelled = validation[labels.targets.relabelled[validation].any(axis=1)]
        kept = validation[cells.table["keep"].to_numpy(bool)[validation]]
    if not kept.size and not relabelled.size:
        raise InputError(f"{config.dataset}: the checkpoint's validation fold has no cells to fine-tune on")
    rows = finetune_sample(kept, relabelled, config.relabel_repeats, config.seed)
    log.info("fine-tuning on %d validation cells (%d relabelled, each %d times): %d cells",
             np.union1d(kept, relabelled).size, relabelled.size, config.relabel_repeats, rows.size)
    return rows, int(relabelled.size)
