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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpasc import atomic
from hpasc.cells.split import read_split
from hpasc.errors import InputError
from hpasc.models import checkpoint as ckpt
from hpasc.models.runner import ModelRunner
from hpasc.runtime import log_done
from hpasc.training.augment import AugmentSettings
from hpasc.training.data import EpochBatches, TileDataset, create_loader, load_cells
from hpasc.training.engine import Engine, place_model
from hpasc.training.labels import LabelSources, load_labels
from hpasc.training.trainer import Runtime, epoch_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    checkpoint: Path
    save_dir: Path
    batch_size: int = 32
    dataset: Path | None = None
    """Default: the dataset the checkpoint was trained on."""
    loss: str | None = None
    augment: AugmentSettings | None = None
    relabel: tuple[Path, ...] = ()
    pseudo: tuple[Path, ...] = ()
    relabel_repeats: int = 3
    lr: float = 3e-5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "save_dir": str(self.save_dir),
                "batch_size": self.batch_size, "dataset": str(self.dataset) if self.dataset else None,
                "loss": self.loss, "augment": self.augment.to_dict() if self.augment else None,
                "relabel": [str(p) for p in self.relabel], "pseudo": [str(p) for p in self.pseudo],
                "relabel_repeats": self.relabel_repeats, "lr": self.lr, "seed": self.seed}


def finetune_sample(kept: np.ndarray, relabelled: np.ndarray, repeats: int, seed: int) -> np.ndarray:
    """Row indices of the pass: each relabelled row ``repeats`` times, each other kept row once,
    shuffled (seeded)."""
    plain = np.setdiff1d(kept, relabelled)
    rows = np.concatenate([plain, np.repeat(relabelled, repeats)]).astype(np.int64)
    np.random.default_rng(seed).shuffle(rows)
    return rows


def finetune(config: FinetuneConfig, runtime: Runtime) -> Path | None:
    """Fine-tune; the written checkpoint, or None when it existed already (without --overwrite)."""
    out = Path(config.save_dir) / Path(config.checkpoint).name
    atomic.remove_abandoned(config.save_dir)
    if out.exists() and not runtime.options.overwrite:
        log.info("%s exists, skipped (--overwrite to redo it)", out)
        log_done("0 checkpoints fine-tuned, 1 fine-tuned before", 0, out)
        return None
    runner = ModelRunner.load(config.checkpoint)  # placed on the device, in its precision, by place_model
    source, model, spec = runner.checkpoint, runner.model, runner.spec
    args = source["args"]
    dataset = config.dataset or Path(args["dataset"])
    split = read_split(dataset)
    cells = load_cells(split)
    for store in cells.stores:
        runner.check_tiles(store)
    sources = LabelSources.from_dict(args.get("labels", {})).plus(config.relabel, config.pseudo)
    labels = load_labels(cells, spec.outputs, sources)
    targets = labels.targets
    if labels.validation_rows is not None:  # the labels' own validation set: every cell of it scored
        validation = relabelled = kept = labels.validation_rows
    else:
        validation = cells.rows_of_images(split.validation_images)
        relabelled = validation[targets.relabelled[validation].any(axis=1)]
        kept = validation[cells.table["keep"].to_numpy(bool)[validation]]
    if not kept.size and not relabelled.size:
        raise InputError(f"{dataset}: the checkpoint's validation fold has no cells to fine-tune on")
    rows = finetune_sample(kept, relabelled, config.relabel_repeats, config.seed)
    log.info("fine-tuning on %d validation cells (%d relabelled, each %d times): %d cells",
             np.union1d(kept, relabelled).size, relabelled.size, config.relabel_repeats, rows.size)

    loss = config.loss or args["loss"]
    augment = config.augment or AugmentSettings.from_dict(args["augment"])
    model = place_model(model, runtime.process, runtime.precision)
    engine = Engine(model, spec, torch.optim.Adam(model.parameters(), lr=config.lr), None, loss, augment,
                    runtime.process, runtime.precision)
    batches = EpochBatches(config.batch_size, drop_last=False)
    batches.set_indices(rows[runtime.process.rank::runtime.process.world_size])
    loader = create_loader(TileDataset(cells, spec.tile_size), batches, runtime.options.workers,
                           pin_memory=runtime.process.device.type == "cuda")
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, 0, runtime.process.rank))
    torch.manual_seed(epoch_seed(config.seed, 0, runtime.process.rank, stream=1))
    train_loss = runtime.process.mean(engine.train_epoch(loader, torch.from_numpy(targets.values), generator,
                                                         runtime.options, "fine-tuning"))
    if runtime.process.is_main:
        entry = {"epoch": source["epoch"], "stage": "finetune", "lr": config.lr, "train_loss": train_loss,
                 "train_cells": int(rows.size)}
        finetuned = {**args, "finetune": {**config.to_dict(), "loss": loss, "augment": augment.to_dict()}}
        ckpt.save_checkpoint(out, ckpt.make_checkpoint(engine.model, spec, source["epoch"],
                                                       [*source["metrics"], entry], finetuned))
        log_done(f"{Path(config.checkpoint).name} fine-tuned on {rows.size} cells ({relabelled.size} relabelled), "
                 f"train loss {train_loss:.4f}", 0, out)
    runtime.process.barrier()
    return out

