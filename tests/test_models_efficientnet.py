"""The EfficientNet registry, ImageNet initialisation of 4-channel models, and fetching the weights."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import url_map

from hpasc.core.errors import InputError
from hpasc.core.http import HttpPolicy
from hpasc.models.backbones.efficientnet import (ARCHITECTURES, IMAGENET_URLS, adapt_imagenet_state, default_cache_dir,
                                       load_pretrained, resolve_pretrained)
from hpasc.models.registry import create_model
from tests.test_download import Behaviour, FakeHPA, serve

B0 = "efficientnet-b0"
B0_FILE = IMAGENET_URLS[B0].rsplit("/", 1)[-1]
FAST = HttpPolicy(timeout=5, retries=0, backoff=0)
TILE = 32
FEATURES = {"efficientnet-b0": 1280, "efficientnet-b1": 1280, "efficientnet-b2": 1408, "efficientnet-b3": 1536,
            "efficientnet-b4": 1792}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_gives_logits_for_four_channels(arch):
    torch.manual_seed(0)
    model = create_model(arch, 19, in_channels=4, tile_size=TILE).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 4, TILE, TILE))
    assert logits.shape == (2, 19)
    assert model._fc.in_features == FEATURES[arch]
    assert (logits < 0).any()  # raw logits, not sigmoid probabilities


def test_registry_tile_sizes_and_unknown_names():
    assert {name: spec.default_tile_size for name, spec in ARCHITECTURES.items()} == {
        "efficientnet-b0": 512, "efficientnet-b1": 512, "efficientnet-b2": 260,
        "efficientnet-b3": 512, "efficientnet-b4": 512}
    assert create_model(B0, 18, tile_size=TILE)._conv_stem.in_channels == 4
    with pytest.raises(InputError) as caught:
        create_model("resnet50", 19)
    assert str(caught.value) == ("unknown architecture 'resnet50'; expected one of efficientnet-b0, "
                                 "efficientnet-b1, efficientnet-b2, efficientnet-b3, efficientnet-b4; "
                                 "timm:NAME (any timm model)")


def imagenet_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """Random weights laid out as efficientnet-pytorch's ImageNet files (RGB stem, 1000 classes)."""
    torch.manual_seed(seed)
    return EfficientNet.from_name(arch).state_dict()


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("imagenet") / "b0.pth"
    torch.save(imagenet_state(B0, seed=1), path)
    return path


@pytest.fixture(scope="module")
def wrong_arch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("imagenet") / "b1.pth"
    torch.save(imagenet_state("efficientnet-b1", seed=2), path)
    return path


def test_imagenet_weights_fill_the_fourth_channel_with_the_rgb_mean(imagenet_file):
    source = torch.load(imagenet_file, weights_only=True)
    torch.manual_seed(3)
    model = create_model(B0, 19, in_channels=4, tile_size=TILE)
    own_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("_fc.")}
    load_pretrained(model, B0, imagenet_file, in_channels=4)
    state = model.state_dict()
    stem = state["_conv_stem.weight"]
    assert stem.shape == (32, 4, 3, 3)
    assert torch.equal(stem[:, :3], source["_conv_stem.weight"])
    assert torch.allclose(stem[:, 3], source["_conv_stem.weight"].mean(dim=1), atol=1e-7)
    assert not torch.allclose(stem[:, 3], stem[:, 0])
    for key, value in state.items():
        if key.startswith("_fc."):
            assert torch.equal(value, own_head[key])  # a fresh 19-class head, not ImageNet's
        elif key != "_conv_stem.weight":
            assert torch.equal(value, source[key]), key


def test_adapt_keeps_the_models_batchnorm_counters_where_the_file_has_none():
    source = {k: v for k, v in imagenet_state(B0, seed=4).items() if not k.endswith("num_batches_tracked")}
    model_state = create_model(B0, 18, in_channels=5, tile_size=TILE).state_dict()
    adapted = adapt_imagenet_state(source, model_state, in_channels=5)
    assert adapted.keys() == model_state.keys()
    assert torch.equal(adapted["_bn0.num_batches_tracked"], model_state["_bn0.num_batches_tracked"])
    mean = source["_conv_stem.weight"].mean(dim=1)
    assert torch.allclose(adapted["_conv_stem.weight"][:, 3], mean)
    assert torch.allclose(adapted["_conv_stem.weight"][:, 4], mean)


def test_weights_of_another_architecture_or_no_weights_are_refused(imagenet_file, wrong_arch_file, tmp_path):
    model = create_model(B0, 19, tile_size=TILE)
    fit = r"b1.pth: not efficientnet-b0 ImageNet weights \(the state_dict does not fit the model: missing _b"
    with pytest.raises(InputError, match=fit):
        load_pretrained(model, B0, wrong_arch_file, in_channels=4)
    bigger = create_model("efficientnet-b3", 19, tile_size=TILE)
    stem = r"_conv_stem.weight has shape \[32, 3, 3, 3\], expected \[40, 4, 3, 3\]"
    with pytest.raises(InputError, match=stem):
        load_pretrained(bigger, "efficientnet-b3", imagenet_file, in_channels=4)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(InputError, match="garbage.pth: not a readable PyTorch weights file"):
        load_pretrained(model, B0, garbage, in_channels=4)
    listed = tmp_path / "list.pth"
    torch.save({"state_dict": {}}, listed)
    with pytest.raises(InputError, match="list.pth: not an EfficientNet state_dict"):
        load_pretrained(model, B0, listed, in_channels=4)


@pytest.fixture
def server(imagenet_file, wrong_arch_file) -> Iterator[FakeHPA]:
    """Serves b0 ImageNet weights, and under other names a login page and b1's weights."""
    yield from serve({f"/mirror/{B0_FILE}": Behaviour(("ok", imagenet_file.read_bytes())),
                   "/page/" + B0_FILE: Behaviour(("ok", b"<html>a login page</html>")),
                   "/b1/" + B0_FILE: Behaviour(("ok", wrong_arch_file.read_bytes()))})


def test_auto_downloads_once_into_the_cache(server, imagenet_file, tmp_path):
    cache = tmp_path / "cache"
    path = resolve_pretrained("auto", B0, cache_dir=cache, base_url=f"{server.base}/mirror/", policy=FAST,
                              progress=False)
    assert path == cache / B0_FILE and path.read_bytes() == imagenet_file.read_bytes()
    again = resolve_pretrained("auto", B0, cache_dir=cache, base_url=f"{server.base}/mirror", policy=FAST)
    assert again == path
    assert server.requests == [f"/mirror/{B0_FILE}"]
    assert [p.name for p in cache.iterdir()] == [B0_FILE]  # no temporary file left


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("folder", ["unreachable", "page", "b1"])
def test_unavailable_weights_mean_training_from_scratch(server, tmp_path, caplog, folder):
    base = f"http://127.0.0.1:{closed_port()}" if folder == "unreachable" else f"{server.base}/{folder}"
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="hpasc"):
        path = resolve_pretrained("auto", B0, cache_dir=cache, base_url=base, policy=FAST, progress=False)
    assert path is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"ImageNet weights for {B0} unavailable (")
    assert warnings[0].endswith("); training from scratch") and "\n" not in warnings[0]
    assert ("not efficientnet-b0 ImageNet weights" in warnings[0]) == (folder == "b1")
    assert not cache.exists() or not any(cache.iterdir())  # nothing kept, not even a bad body
    # Offline, one quick probe says so, not four tries with back-off behind a progress bar (item 6).
    assert ("cannot reach 127.0.0.1" in warnings[0] and "tries" not in warnings[0]) == (folder == "unreachable")


def test_explicit_specs_and_no_download(tmp_path, caplog):
    assert resolve_pretrained("none", B0, cache_dir=tmp_path) is None
    own = tmp_path / "mine.pth"
    own.write_bytes(b"x")
    assert resolve_pretrained(str(own), B0) == own
    with pytest.raises(InputError, match="absent.pth: ImageNet weights file does not exist"):
        resolve_pretrained(str(tmp_path / "absent.pth"), B0)
    with pytest.raises(InputError, match="unknown architecture"):
        resolve_pretrained("none", "efficientnet-b9")
    with caplog.at_level(logging.WARNING, logger="hpasc"):
        assert resolve_pretrained("auto", B0, cache_dir=tmp_path / "c", download=False) is None
    assert "downloading is off); training from scratch" in caplog.text


def test_official_urls_and_default_cache_dir(monkeypatch, tmp_path):
    assert IMAGENET_URLS == {name: url_map[name] for name in ARCHITECTURES}
    assert B0_FILE == "efficientnet-b0-355c32eb.pth"
    monkeypatch.setenv("HPASC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "imagenet"
    monkeypatch.delenv("HPASC_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "hpasc" / "imagenet"
