"""What a training or fine-tuning run is given, and the typed record of it that each checkpoint holds.

A checkpoint's ``args`` is a :class:`RunRecord`'s ``to_dict()``: the :class:`TrainConfig` that
trained it, plus the :class:`FinetuneConfig` of the fine-tuning pass that changed it, if any.
Resuming compares the record with the flags, and finetuner.py reads the dataset, labels, loss and
augmentation from it. Records written by earlier versions read back with a missing field at its
default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpasc.core.errors import InputError
from hpasc.core.runtime import CommonOptions
from hpasc.models.precision import Precision
from hpasc.stages.train.augment import AugmentSettings
from hpasc.stages.train.distributed import Process
from hpasc.stages.train.label_sources import LabelSources

# Settings that define what a run learns: a resumed run must keep them.
IDENTITY = ("dataset", "arch", "loss", "tile_size", "negative_head", "augment", "seed", "epochs",
            "epoch_size", "lr", "min_lr", "labels", "sampling")


@dataclass(frozen=True)
class TrainConfig:
    """What a training run learns and where it is saved."""

    dataset: Path
    save_dir: Path
    name: str
    arch: str = "efficientnet-b0"
    loss: str = "bce"
    batch_size: int = 32
    epochs: int = 16
    epoch_size: int = 20000
    lr: float = 3e-4
    min_lr: float = 1e-5
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    tile_size: int | None = None
    pretrained: str = "auto"
    labels: LabelSources = field(default_factory=LabelSources)
    sampling: Path | None = None
    negative_head: bool = False
    seed: int = 0
    patience: int = 0

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(dataset=str(Path(self.dataset).resolve()), save_dir=str(self.save_dir),
                      augment=self.augment.to_dict(), labels=self.labels.to_dict(),
                      sampling=str(self.sampling) if self.sampling else None)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config :meth:`to_dict` wrote (a field it lacks takes its default; TypeError/ValueError
        for an unknown field or a bad value)."""
        sampling = values.get("sampling")
        return cls(**{**values, "dataset": Path(values["dataset"]), "save_dir": Path(values["save_dir"]),
                      "augment": AugmentSettings.from_dict(values.get("augment", {})),
                      "labels": LabelSources.from_dict(values.get("labels", {})),
                      "sampling": Path(sampling) if sampling else None})

    def differences(self, other: TrainConfig) -> list[str]:
        """The :data:`IDENTITY` settings in which ``other`` learns something else."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [key for key in IDENTITY if mine[key] != theirs[key]]


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning pass over ``checkpoint``; the fields left None take the checkpoint's own."""

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

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        augment, dataset = values.get("augment"), values.get("dataset")
        return cls(**{**values, "checkpoint": Path(values["checkpoint"]), "save_dir": Path(values["save_dir"]),
                      "dataset": Path(dataset) if dataset else None,
                      "augment": AugmentSettings.from_dict(augment) if augment else None,
                      "relabel": tuple(map(Path, values.get("relabel", ()))),
                      "pseudo": tuple(map(Path, values.get("pseudo", ())))})

    def resolved(self, trained: TrainConfig) -> FinetuneConfig:
        """This pass with the dataset, loss and augmentation it leaves open taken from ``trained``."""
        return dataclasses.replace(self, dataset=self.dataset or trained.dataset, loss=self.loss or trained.loss,
                                   augment=self.augment or trained.augment)


RECORD_VERSION = 1
"""The run record's layout: 1 added ``record_version`` (records without one are version 0, the same
fields); a field added later takes its default when read from an older record."""


@dataclass(frozen=True)
class RunRecord:
    """What a checkpoint (its ``args``) and a training manifest record of the runs that made a
    model: the training run's settings and, after a fine-tuning pass, that pass's. The command
    flags take their defaults from these classes' fields: one place for every default."""

    train: TrainConfig
    finetune: FinetuneConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        finetuned = {} if self.finetune is None else {"finetune": self.finetune.to_dict()}
        return {"record_version": RECORD_VERSION, **self.train.to_dict(), **finetuned}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], path: Path) -> RunRecord:
        """The record of a checkpoint loaded from ``path``; one-line InputError if it is not one
        (or one of a newer hpasc)."""
        values = dict(checkpoint["args"])
        version = values.pop("record_version", 0)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise InputError(f"{path}: its run record is version {version!r}; this hpasc reads up to "
                             f"{RECORD_VERSION} (a newer hpasc made it)")
        finetuned = values.pop("finetune", None)
        try:
            return cls(TrainConfig.from_dict(values),
                       None if finetuned is None else FinetuneConfig.from_dict(finetuned))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: its run record is not one this version reads ({exc})") from None


@dataclass(frozen=True)
class Execution:
    """How this process runs (free to change between a run and its resumption)."""

    options: CommonOptions
    process: Process
    resume: bool = False
    precision: Precision = Precision()
    pretrained_url: str | None = None
