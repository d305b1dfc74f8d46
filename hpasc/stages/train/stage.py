"""train_me.py's run: data from a split, an epoch loop with per-epoch checkpoints, resume.

Each epoch draws a fresh sample of training cells (:class:`~hpasc.stages.train.sampling.EpochSampler`,
seeded by (seed, epoch)), reads their tiles (:class:`~hpasc.stages.train.data.TileReader`: worker
processes on a GPU), augments batches on the training device (seeded by (seed, epoch, rank)), and
steps Adam with cosine annealing. After each
epoch the main process validates and writes ``{save}/{name}-{epoch}.pt`` atomically with the
optimiser, scheduler and scaler states, then rewrites ``{name}-metrics.csv`` from the history held
in the checkpoint. Because every random draw depends only on (seed, epoch), a run killed anywhere
and resumed from its last checkpoint trains exactly the epochs it had not finished.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.runtime import CommonOptions
from hpasc.models import checkpoint as ckpt
from hpasc.models.architecture import Pretrained
from hpasc.models.registry import architecture, create_model
from hpasc.models.runner import warn_enlarging
from hpasc.models.spec import ModelSpec
from hpasc.cellstore.split import Split, read_split
from hpasc.stages.train.config import Execution, RunRecord, TrainConfig
from hpasc.stages.train.data import (Batches, CellSet, EpochBatches, TileReader, fixed_batches, load_cells,
                                     loader_workers)
from hpasc.stages.train.engine import Engine, adam, place_model
from hpasc.stages.train.label_sources import CellLabels, LabelSources, load_labels
from hpasc.stages.train.metrics import class_average_precision, mean_average_precision, write_metrics_csv
from hpasc.stages.train.sampling import EpochSampler, read_sampling_config

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    cells: CellSet
    targets: torch.Tensor
    train_rows: np.ndarray
    validation_rows: np.ndarray
    sampler: EpochSampler
    metric: np.ndarray | None = None
    """bool (validation cells, outputs): the pairs the validation mAP counts (None: all)."""


def resolve_tile_size(requested: int | None, arch: str, store_tile: int) -> int:
    """``--tile-size``, else the architecture's size capped by the store's tiles."""
    if requested is None:
        return min(architecture(arch).default_tile_size, store_tile)
    return requested


def outputs_for(negative_head: bool) -> tuple[int, ...]:
    """18 outputs (Negative derived as 1 − max) or 19 with a Negative output."""
    return tuple(range(19 if negative_head else 18))


def labelled_cells(dataset: Path, outputs: tuple[int, ...], sources: LabelSources) -> tuple[Split, CellSet, CellLabels]:
    """The dataset's split, its cells and their labels for ``outputs``."""
    split = read_split(dataset)
    cells = load_cells(split)
    return split, cells, load_labels(cells, outputs, sources)


def prepare_data(config: TrainConfig) -> TrainingData:
    outputs = outputs_for(config.negative_head)
    split, cells, labels = labelled_cells(config.dataset, outputs, config.labels)
    targets = labels.targets
    train_rows, validation_rows = _train_and_validation_rows(cells, split, labels)
    if not train_rows.size:
        raise InputError(f"{config.dataset}: no kept cells in the training folds")
    sampler = EpochSampler([labels.label_lists[i] for i in train_rows], targets.values[train_rows],
                           targets.relabelled[train_rows], outputs,
                           config=read_sampling_config(config.sampling), epoch_size=config.epoch_size,
                           seed=config.seed)
    log.info("%d training cells, %d validation cells; %d cells per epoch", train_rows.size,
             validation_rows.size, config.epoch_size)
    return TrainingData(cells, torch.from_numpy(targets.values), train_rows, validation_rows, sampler,
                        labels.metric)


def _train_and_validation_rows(cells: CellSet, split: Split, labels: CellLabels) -> tuple[np.ndarray, np.ndarray]:
    """The split's folds; or, when the labels bring a validation set, that set and every other cell."""
    relabelled_cell = labels.targets.relabelled.any(axis=1)
    keep = cells.table["keep"].to_numpy(bool)
    if labels.validation_rows is not None:
        in_train = np.ones(len(cells), bool)
        in_train[labels.validation_rows] = False
        log.info("the labels' validation files choose the validation cells: the split's folds are not used")
        validation_rows = labels.validation_rows
    else:
        in_train = np.zeros(len(cells), bool)
        in_train[cells.rows_of_images(split.train_images)] = True
        validation_rows = cells.kept_rows("validation", split)
    # Manually relabelled cells are trained on even where the heuristics would drop them.
    return np.flatnonzero(in_train & (keep | relabelled_cell)), validation_rows


def build_engine(config: TrainConfig, execution: Execution, tile_size: int, outputs: tuple[int, ...],
                 resumed: dict[str, Any] | None, cells: CellSet) -> Engine:
    """The model (ImageNet-initialised, or the resumed checkpoint's), Adam and cosine annealing."""
    torch.manual_seed(config.seed)  # the same initial weights on every process and every run
    model = create_model(config.arch, len(outputs), tile_size=tile_size)
    if resumed is not None:
        model.load_state_dict(resumed["model_state"])
    else:
        _initialise(model, config, execution)
    spec = ModelSpec(arch=config.arch, in_channels=4, outputs=outputs, tile_spec=cells.tile_spec.resized(tile_size),
                     segmentation=cells.segmentation)
    model = place_model(model, execution.process, execution.precision)
    optimizer = adam(model, config.lr, execution.process.device)
    # As the 4th place: the last epoch runs at min_lr (T_max = epochs - 1).
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs - 1, 1),
                                                           eta_min=config.min_lr)
    engine = Engine(model, spec, optimizer, scheduler, config.loss, config.augment, execution.process,
                    execution.precision)
    if resumed is not None:
        engine.load_training_state(resumed["training_state"])
        follow_schedule(scheduler, config.epochs)
    return engine


def follow_schedule(scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, epochs: int) -> None:
    """After a run's scheduler is loaded: a run extended to ``epochs`` follows, from the epoch it
    stopped at, the cosine of a run started with ``epochs`` (its learning rate set to that curve's
    value there); a run of the same length is left exactly as saved."""
    span = max(epochs - 1, 1)
    if scheduler.T_max == span:
        return
    scheduler.T_max = span
    phase = (1 + math.cos(math.pi * min(scheduler.last_epoch, span) / span)) / 2
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * phase


def _initialise(model: torch.nn.Module, config: TrainConfig, execution: Execution) -> None:
    pretrained = Pretrained(config.pretrained, base_url=execution.pretrained_url,
                            progress=execution.options.progress and execution.process.is_main)
    source = architecture(config.arch).initialise(model, 4, pretrained)
    if source is not None:
        log.info("initialised %s from ImageNet weights %s", config.arch, source)
    elif config.pretrained == "none":
        log.info("--pretrained none: training %s from scratch", config.arch)


def validation_batches(data: TrainingData, reader: TileReader) -> Batches | None:
    """The validation cells in a fixed order (None when there are none)."""
    if not data.validation_rows.size:
        return None
    return reader.batches(fixed_batches(data.validation_rows, reader.batch_size))


def validate(engine: Engine, data: TrainingData, loader: Batches | None, options: CommonOptions,
             description: str) -> dict[str, Any]:
    """Validation loss, cell-level mAP and per-class AP (empty when there are no validation cells)."""
    if loader is None:
        return {"val_loss": None, "val_map": None, "ap": {}}
    loss, probabilities = engine.validation_pass(loader, data.targets, options, description)
    targets = data.targets[data.validation_rows].numpy()
    per_class = class_average_precision(probabilities, targets, engine.spec.outputs, data.metric)
    return {"val_loss": loss, "val_map": mean_average_precision(per_class),
            "ap": {str(c): v for c, v in per_class.items()}}


def _existing_run(config: TrainConfig, execution: Execution) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start; refuses to mix two runs in one name."""
    latest = ckpt.find_latest(config.save_dir, config.name)
    if latest is None:
        if execution.resume:
            log.info("no checkpoint %s-*.pt in %s: starting at epoch 1", config.name, config.save_dir)
        return None
    path, epoch = latest
    if execution.resume:
        checkpoint = ckpt.load_checkpoint(path)
        trained = RunRecord.from_checkpoint(checkpoint, path).train
        longer = config.epochs > trained.epochs  # extending a run is resuming it with more epochs
        differs = [key for key in trained.differences(config) if not (key == "epochs" and longer)]
        if differs:
            raise InputError(f"{path} was trained with other settings ({', '.join(differs)}); resume "
                             "with the same flags, or use another --name")
        log.info("resuming from %s (epoch %d)%s", path, epoch,
                 f"; extending the run from {trained.epochs} to {config.epochs} epochs" if longer else "")
        return checkpoint
    if not execution.options.overwrite:
        raise InputError(f"{path} exists: pass --resume to continue that run or --overwrite to "
                         "start it again")
    if execution.process.is_main:
        for old in ckpt.run_checkpoints(config.save_dir, config.name):
            old.unlink()
        log.info("--overwrite: removed the checkpoints of %s in %s", config.name, config.save_dir)
    execution.process.barrier()
    return None


def train(config: TrainConfig, execution: Execution) -> Path | None:
    """Train (or resume) the run; returns its last checkpoint (None if it had nothing to do)."""
    if execution.process.is_main:
        atomic.remove_abandoned(config.save_dir)
    resumed = _existing_run(config, execution)
    history: list[dict[str, Any]] = list(resumed["metrics"]) if resumed else []
    start = resumed["epoch"] + 1 if resumed else 1
    final = ckpt.checkpoint_path(config.save_dir, config.name, start - 1) if resumed else None
    if start > config.epochs or stopped_early(history, config.patience):
        log.info("%s: already trained (epoch %d of %d)", config.name, start - 1, config.epochs)
        return final
    data = prepare_data(config)
    if execution.process.is_main:
        atomic.write_text(Path(config.save_dir) / f"{config.name}-args.yaml",
                          yaml.safe_dump(config.to_dict(), sort_keys=False))
    tile_size = resolve_tile_size(config.tile_size, config.arch, data.cells.tile_size)
    for store in data.cells.stores:
        warn_enlarging(store.tile_size, tile_size, store.root)
    engine = build_engine(config, execution, tile_size, outputs_for(config.negative_head), resumed, data.cells)
    final = _run_epochs(config, execution, data, engine, tile_size, start, history) or final
    if execution.process.is_main:
        log.info("%s", run_summary(config, history))
    return final


def _run_epochs(config: TrainConfig, execution: Execution, data: TrainingData, engine: Engine, tile_size: int,
                start: int, history: list[dict[str, Any]]) -> Path | None:
    """Epochs ``start``.. of the run, each saved (by the main process, which returns the last)."""
    batches = EpochBatches(config.batch_size, drop_last=True)
    with tile_reader(data.cells, tile_size, config.batch_size, execution) as reader:
        validating = validation_batches(data, reader) if execution.process.is_main else None
        return _epochs(config, execution, data, engine, reader.batches(batches), validating, start, history)


def _epochs(config: TrainConfig, execution: Execution, data: TrainingData, engine: Engine, loader: Batches,
            validating: Batches | None, start: int, history: list[dict[str, Any]]) -> Path | None:
    process, final = execution.process, None
    batches = loader.sampler
    for epoch in range(start, config.epochs + 1):
        began = time.perf_counter()
        sample = data.train_rows[data.sampler.sample(epoch)]
        batches.set_indices(sample[process.rank::process.world_size])
        lr = engine.optimizer.param_groups[0]["lr"]
        generator = seed_epoch(config.seed, epoch, process.rank)
        train_loss = process.mean(engine.train_epoch(loader, data.targets, generator,
                                                     execution.options, f"epoch {epoch}/{config.epochs}"))
        engine.scheduler.step()
        entry = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_cells": len(sample)}
        if process.is_main:
            entry |= validate(engine, data, validating, execution.options, f"validation {epoch}/{config.epochs}")
            entry["seconds"] = round(time.perf_counter() - began, 2)
            history.append(entry)
            final = _save_epoch(config, engine, epoch, history)
            _log_epoch(entry)
        # The main process alone validated: its decision to stop holds for every process.
        if process.mean(float(process.is_main and stopped_early(history, config.patience))) > 0:
            log.info("early stopping: validation mAP has not improved for %d epochs", config.patience)
            break
    return final


def tile_reader(cells: CellSet, tile_size: int, batch_size: int, execution: Execution) -> TileReader:
    """The reader of a run's batches: worker processes on a GPU, the main process on the CPU."""
    device = execution.process.device
    return TileReader(cells, tile_size, batch_size, loader_workers(execution.options.workers, device), device)


def seed_epoch(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The augmentation generator of one epoch on one process, after seeding the global generator
    for it: dropout and drop-connect draw from that one, so a resumed run draws what the
    uninterrupted run would have."""
    torch.manual_seed(epoch_seed(seed, epoch, rank, stream=1))
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, rank))


def run_summary(config: TrainConfig, history: list[dict[str, Any]]) -> str:
    """One line for a person: epochs trained, the best validation mAP and its checkpoint."""
    scored = [e for e in history if e.get("val_map") is not None and not math.isnan(e["val_map"])]
    done = f"done: {config.name} trained to epoch {history[-1]['epoch']} of {config.epochs} in {config.save_dir}"
    if not scored:
        return f"{done}; no validation mAP (no validation cell is positive for any class)"
    best = max(scored, key=lambda e: e["val_map"])
    return (f"{done}; best validation mAP {best['val_map']:.4f} at epoch {best['epoch']} "
            f"({ckpt.checkpoint_path(config.save_dir, config.name, best['epoch'])})")


def epoch_seed(seed: int, epoch: int, rank: int, stream: int = 0) -> int:
    """A seed for one random stream of one process in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0])


def _save_epoch(config: TrainConfig, engine: Engine, epoch: int, history: list[dict]) -> Path:
    path = ckpt.checkpoint_path(config.save_dir, config.name, epoch)
    checkpoint = ckpt.make_checkpoint(engine.model, engine.spec, epoch, history, RunRecord(config).to_dict(),
                                      engine.training_state())
    ckpt.save_checkpoint(path, checkpoint)
    write_metrics_csv(Path(config.save_dir) / f"{config.name}-metrics.csv", history)
    return path


def _log_epoch(entry: dict[str, Any]) -> None:
    val_map = entry.get("val_map")
    log.info("epoch %d: train loss %.4f, validation loss %s, validation mAP %s (%.0f s)",
             entry["epoch"], entry["train_loss"], _fmt(entry.get("val_loss")), _fmt(val_map),
             entry["seconds"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def stopped_early(history: list[dict[str, Any]], patience: int) -> bool:
    """Whether the last ``patience`` epochs brought no better validation mAP than before them."""
    scores = [e.get("val_map") for e in history]
    scores = [s for s in scores if s is not None and not math.isnan(s)]
    if patience <= 0 or len(scores) <= patience:
        return False
    return max(scores[-patience:]) <= max(scores[:-patience])

