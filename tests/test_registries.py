"""The two extension points that are registries: a backbone family and a channel file format, each
added from a test-only module (tests/extensions/) without touching a library file, and used the way
the stages use the built-in ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hpasc.core import images
from hpasc.core.errors import InputError
from hpasc.core.image_folder import scan_images
from hpasc.core.images import CHANNELS, read_image_size, register_format, write_channel
from hpasc.core.runtime import CommonOptions
from hpasc.models import registry
from hpasc.models.checkpoint import load_checkpoint
from hpasc.stages.infer.ensemble import LoadedEnsemble
from hpasc.stages.infer.ensemble_file import read_ensemble
from hpasc.stages.train.config import Execution, TrainConfig
from hpasc.stages.train.distributed import Process
from hpasc.stages.train.stage import train
from tests.conftest import REPO
from tests.extensions import npy_channels, tiny_backbone

DATASET = REPO / "tests" / "data" / "made_before_tile_spec" / "dataset"  # 16 px tiles, split in 2 folds
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_family(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", [])  # this test's registration only
    registry.register_family(tiny_backbone.FAMILY)


def test_a_registered_backbone_family_trains_and_scores(tiny_family, tmp_path: Path) -> None:
    shutil.copytree(DATASET, tmp_path / "dataset")
    config = TrainConfig(tmp_path / "dataset", tmp_path / "models", "tiny", arch="tiny:cnn", batch_size=16,
                         epochs=2, epoch_size=32, tile_size=16, pretrained="none")
    last = train(config, Execution(CommonOptions(workers=1, progress=False), Process(device=torch.device("cpu"))))
    assert last == tmp_path / "models" / "tiny-2.pt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["model_spec"]["arch"] == "tiny:cnn" and "head.weight" in checkpoint["model_state"]
    ensemble = LoadedEnsemble(read_ensemble(last), torch.device("cpu"))
    tiles = torch.randint(0, 65535, (3, 4, 16, 16)).to(torch.uint16)
    scores, [embeddings] = ensemble.with_embeddings(tiles)
    assert scores.shape == (3, 19) and np.isfinite(scores).all() and embeddings.shape == (3, 8)
    with pytest.raises(InputError, match=r"unknown architecture 'tinny:cnn'.*; tiny:cnn"):
        registry.architecture("tinny:cnn")


def test_without_its_module_the_family_is_unknown(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", [])
    with pytest.raises(InputError, match="unknown architecture 'tiny:cnn'; expected one of efficientnet-b0"):
        registry.architecture("tiny:cnn")


def test_a_registered_channel_format_is_listed_read_and_written(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(images, "_FORMATS", list(images._FORMATS))  # this test's registration only
    register_format(npy_channels.NPY)
    image = np.random.default_rng(0).integers(0, 65535, (20, 30, 4), dtype=np.uint16)
    for index, channel in enumerate(CHANNELS):
        write_channel(tmp_path / f"cell-7_{channel}.npy", image[..., index])
    folder = scan_images(tmp_path)
    assert folder.ids == ["cell-7"] and folder.unusable == {}
    np.testing.assert_array_equal(folder.read("cell-7"), image)
    assert read_image_size(tmp_path / "cell-7_red.npy") == (30, 20)
    assert images.extensions()[-1] == ".npy"
    write_channel(tmp_path / "cell-7_red.png", image[..., 0])  # a channel in two formats: PNG ranks first
    assert scan_images(tmp_path).sources["cell-7"].files[0].name == "cell-7_red.png"
