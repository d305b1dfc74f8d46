"""The typed record of a run that each checkpoint holds (its ``args``): written, read back, read from
a checkpoint made before it was typed, and refused in one line when it is not one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpasc.core.errors import InputError
from hpasc.models.checkpoint import load_checkpoint
from hpasc.stages.train.augment import AugmentSettings
from hpasc.stages.train.config import FinetuneConfig, RunRecord, TrainConfig
from hpasc.stages.train.label_sources import LabelSources
from tests.conftest import REPO

BEFORE = REPO / "tests" / "data" / "made_before_tile_spec" / "old-1.pt"


def test_a_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    train = TrainConfig(tmp_path / "dataset", tmp_path / "models", "b0-bce", epochs=3,
                        augment=AugmentSettings.from_flags(True, False),
                        labels=LabelSources((tmp_path / "relabel",), score_map=tmp_path / "map.yaml"),
                        sampling=tmp_path / "quotas.yaml")
    tune = FinetuneConfig(tmp_path / "b0-bce-3.pt", tmp_path / "tuned", relabel=(tmp_path / "more",)).resolved(train)
    for record in (RunRecord(train), RunRecord(train, tune)):
        again = RunRecord.from_checkpoint({"args": record.to_dict()}, tmp_path / "x.pt")
        assert again.to_dict() == record.to_dict() and not again.train.differences(train)
    assert tune.loss == "bce" and tune.augment == train.augment and tune.dataset == train.dataset


def test_a_checkpoint_made_before_the_record_was_typed_reads() -> None:
    record = RunRecord.from_checkpoint(load_checkpoint(BEFORE), BEFORE)
    assert record.train.arch == "timm:test_efficientnet" and record.train.epochs == 2
    assert record.train.dataset == Path("/tmp/fixture/dataset") and record.finetune is None
    assert record.train.differences(TrainConfig(Path("/tmp/fixture/dataset"), Path("m"), "old",
                                                arch="timm:test_efficientnet", epochs=3, epoch_size=32,
                                                tile_size=16)) == ["epochs"]


def test_a_record_this_version_cannot_read_is_one_line(tmp_path: Path) -> None:
    args = RunRecord(TrainConfig(tmp_path, tmp_path, "x")).to_dict()
    for bad in ({**args, "warmup": 3}, {**args, "augment": {"hflip": 1}}, {"name": "x"}):
        with pytest.raises(InputError, match=r"x\.pt: its run record is not one this version reads \("):
            RunRecord.from_checkpoint({"args": bad}, tmp_path / "x.pt")


def test_the_record_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    args = RunRecord(TrainConfig(tmp_path, tmp_path, "x")).to_dict()
    assert args["record_version"] == 1
    older = {key: value for key, value in args.items() if key != "record_version"}  # as written before
    assert RunRecord.from_checkpoint({"args": older}, tmp_path / "x.pt").to_dict() == args
    with pytest.raises(InputError, match=r"x\.pt: its run record is version 2; this hpasc reads up to 1"):
        RunRecord.from_checkpoint({"args": {**args, "record_version": 2}}, tmp_path / "x.pt")


def test_the_flags_defaults_are_the_record_s() -> None:
    """One place for every default: train_me's and finetuner's flags read the typed settings' own."""
    from hpasc.commands.finetune import build_parser as finetune_parser
    from hpasc.commands.train import build_parser as train_parser

    parsed = vars(train_parser().parse_args([]))
    default = TrainConfig(Path("d"), Path("s"), "n")
    for flag, field in (("criterion", "loss"), ("batch_size", "batch_size"), ("arch", "arch"), ("epochs", "epochs"),
                        ("epoch_size", "epoch_size"), ("lr", "lr"), ("min_lr", "min_lr"), ("tile_size", "tile_size"),
                        ("pretrained", "pretrained"), ("seed", "seed"), ("patience", "patience")):
        assert parsed[flag] == getattr(default, field), flag
    assert parsed["label_format"] == default.labels.label_format
    tuned = vars(finetune_parser().parse_args(["-l", "x.pt"]))
    pass_default = FinetuneConfig(Path("c.pt"), Path("s"))
    assert (tuned["lr"], tuned["relabel_repeats"], tuned["seed"]) == (pass_default.lr, pass_default.relabel_repeats,
                                                                     pass_default.seed)
