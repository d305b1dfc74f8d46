"""The native DPN-UNet: parameter layout, official-format loading (safely) and obtaining weights."""

from __future__ import annotations

import functools
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from hpasc.core.errors import InputError
from hpasc.core.http import HttpPolicy
from hpasc.segmentation.network import BnRelu, BnReluConv, DPNUNet, DualPathBlock, Fuse, UpConv
from hpasc.segmentation.weight_files import (CELL_WEIGHTS, HPA_WEIGHTS, NUCLEI_WEIGHTS, default_cache_dir,
                                               resolve_weights)
from hpasc.segmentation.weights import load_hpa_model, load_hpa_state_dict
from tests.test_download import Behaviour, FakeHPA, serve

LAYOUT = Path(__file__).resolve().parent / "data" / "dpn_unet_layout.txt"
FAST = HttpPolicy(timeout=5, retries=0, backoff=0)
PERIOD = 100_003  # a prime, so that no tensor dimension lines up with the repeats

# pytorch_zoo's names for our classes, as a pickled official model refers to them.
ZOO_NAMES = {DPNUNet: ("pytorch_zoo.unet", "DPNUnet"), DualPathBlock: ("pytorch_zoo.dpn", "DualPathBlock"),
             BnReluConv: ("pytorch_zoo.dpn", "BnActConv2d"), BnRelu: ("pytorch_zoo.dpn", "CatBnAct"),
             UpConv: ("pytorch_zoo.abstract_model", "UnetDecoderBlock"),
             Fuse: ("pytorch_zoo.abstract_model", "ConvBottleneck")}
ZOO_MODULES = {name: types.ModuleType(name) for name in
               ("pytorch_zoo", "pytorch_zoo.unet", "pytorch_zoo.dpn", "pytorch_zoo.abstract_model")}
ZOO_CLASSES = {ours: type(name, (ours,), {"__module__": module, "__qualname__": name})
               for ours, (module, name) in ZOO_NAMES.items()}
for _class in ZOO_CLASSES.values():
    setattr(ZOO_MODULES[_class.__module__], _class.__name__, _class)


def randomize(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so that a mix-up shows."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                tensor.data.uniform_(-0.5, 1.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.num_batches_tracked.fill_(7)
    return model.eval()


def dress_as_pytorch_zoo(model: DPNUNet) -> DPNUNet:
    """Make ``model`` pickle like an official file: pytorch_zoo classes, and the extra attributes
    and parameterless submodules that pytorch_zoo's modules carry."""
    relu = nn.ReLU(inplace=True)  # pytorch_zoo's blocks share one ReLU (a default argument)
    for module in list(model.modules()):
        module.__class__ = ZOO_CLASSES.get(type(module), type(module))
        if isinstance(module, (BnReluConv, BnRelu)):
            module.act = relu
    model.decoder_block, model.bottleneck_type = ZOO_CLASSES[UpConv], ZOO_CLASSES[Fuse]
    model.decoder_type, model.first_layer_stride_two, model.need_center = 1, True, False
    return model


def save_with_zoo_importable(obj: object, path: Path, **kwargs) -> None:
    """torch.save while the fake pytorch_zoo modules are importable, then make them vanish."""
    with mock.patch.dict(sys.modules, ZOO_MODULES), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy format wants our fake classes' source
        torch.save(obj, path, **kwargs)
    assert not any(name.startswith("pytorch_zoo") for name in sys.modules)


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> DPNUNet:
    torch.manual_seed(0)
    return randomize(DPNUNet())


@pytest.fixture(scope="module")
def zoo_model() -> DPNUNet:
    torch.manual_seed(1)
    return dress_as_pytorch_zoo(randomize(DPNUNet()))


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def tiny_state_dict(**changes: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """DPNUNet's keys and shapes backed by one-element storages (a file of a few hundred kB);
    ``changes`` replace (or, with None, drop) entries; '__' in a name stands for '.'."""
    with torch.device("meta"):
        layout = DPNUNet().state_dict()
    state = {k: torch.full((), 0.5, dtype=v.dtype).expand(v.shape) for k, v in layout.items()}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@functools.cache
def hashed_points() -> torch.Tensor:
    points = torch.arange(PERIOD, dtype=torch.float64)
    return (2 * torch.frac((torch.sin(points * 12.9898 + 78.233) * 43758.5453).abs()) - 1).float()


def pseudo_random(count: int, salt: int) -> torch.Tensor:
    """``count`` values in [-1, 1) that are the same on every platform and torch version: a
    float64 hash of a prime number of points, rotated by ``salt`` and tiled (one copy, as the
    139M parameters make every pass over them count)."""
    return hashed_points().roll(salt * 7919).expand(count // PERIOD + 1, PERIOD).flatten()[:count]


def reference_weights(layout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Platform-independent weights that keep activations O(1) through the network."""
    state = {}
    for salt, (key, like) in enumerate(layout.items()):
        wave = pseudo_random(like.numel(), salt).reshape(like.shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(5)
        elif like.ndim == 4:  # conv kernels: variance 1 / fan-in
            state[key] = wave.mul_((3 / like[0].numel()) ** 0.5)
        elif key.endswith("running_var"):
            state[key] = wave.mul_(0.5).add_(1)
        elif key.endswith(("running_mean", "bias")):
            state[key] = wave.mul_(0.1)
        else:  # BatchNorm scales
            state[key] = wave.mul_(0.2).add_(1)
    return state


def reference_input() -> torch.Tensor:
    return pseudo_random(3 * 64 * 64, 0).reshape(1, 3, 64, 64) * 0.5 + 0.5


def official_layout() -> dict[str, list[int]]:
    """tests/data/dpn_unet_layout.txt: each state_dict key of the official files, then its shape."""
    lines = [line.split() for line in LAYOUT.read_text().splitlines() if not line.startswith("#")]
    return {fields[0]: [int(n) for n in fields[1].split("x")] if len(fields) > 1 else [] for fields in lines}


def test_state_dict_layout_matches_the_official_one(model):
    expected = official_layout()
    assert len(expected) == 595
    layout = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert layout == expected
    assert list(layout) == list(expected)  # and in pytorch_zoo's order


def test_outputs_match_pytorch_zoos_dpnunet():
    """Reference numbers computed by pytorch_zoo's own DPNUnet (haoxusci/pytorch_zoo, the package
    hpacellseg installs) with these weights and input: it catches any change of the computation
    (layer order, BatchNorm eps, upsampling mode, skip order...) that the state_dict cannot show."""
    with torch.device("meta"):
        net = DPNUNet()
    net.load_state_dict(reference_weights(net.state_dict()), assign=True)
    out = outputs(net.eval(), reference_input())
    expected = {"mean": [-0.24111710, 0.16873650, 0.05013625], "std": [0.08089108, 0.07602820, 0.07886133],
                "points": [-0.00940205, 0.21276182, -0.01730403, -0.24232842]}
    points = ((0, 0, 0), (1, 31, 17), (2, 63, 63), (0, 40, 5))
    found = {"mean": out.mean(dim=(0, 2, 3)).tolist(), "std": out.std(dim=(0, 2, 3)).tolist(),
             "points": [out[0, c, y, x].item() for c, y, x in points]}
    for key, values in expected.items():
        torch.testing.assert_close(torch.tensor(found[key]), torch.tensor(values), rtol=1e-4, atol=2e-5,
                                   msg=lambda text, key=key: f"{key}: {text}")


def test_forward_keeps_the_size_and_handles_batches(model):
    single = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    pair = torch.cat([single, single.flip(-1)])
    assert outputs(model, single).shape == (1, 3, 64, 96)
    both = outputs(model, pair)
    assert both.shape == (2, 3, 64, 96)
    torch.testing.assert_close(both[:1], outputs(model, single))
    assert not torch.allclose(both[0], both[1])


def test_forward_refuses_sizes_that_are_not_multiples_of_32(model):
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 64, 80))


@pytest.mark.parametrize("wrap, zipped", [(False, True), (True, False)],
                         ids=["plain-zip", "dataparallel-legacy"])
def test_official_whole_model_pickle_loads_without_pytorch_zoo(zoo_model, image, tmp_path, wrap, zipped):
    saved = tmp_path / "official.pth"
    source: nn.Module = zoo_model
    if wrap:  # as saved from GPUs, whose DataParallel also holds a torch.device
        source = nn.DataParallel(zoo_model)
        source.device_ids, source.output_device, source.src_device_obj = [0], 0, torch.device("cuda", 0)
    save_with_zoo_importable(source, saved, _use_new_zipfile_serialization=zipped)
    loaded = load_hpa_model(saved)
    assert type(loaded) is DPNUNet and not loaded.training
    assert torch.equal(outputs(loaded, image), outputs(zoo_model, image))


def test_plain_state_dict_with_dataparallel_prefixes_loads(model, image, tmp_path):
    saved = tmp_path / "state.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, saved)
    loaded = load_hpa_model(saved)
    assert torch.equal(outputs(loaded, image), outputs(model, image))


def test_checkpoint_dict_with_a_state_dict_entry_and_half_precision(tmp_path):
    saved = tmp_path / "checkpoint.pth"
    weight = torch.randn(3, 64, 3, 3).half()
    torch.save({"state_dict": tiny_state_dict(final__0__weight=weight), "epoch": 12}, saved)
    state = load_hpa_state_dict(saved)
    assert state["final.0.weight"].dtype == torch.float32
    assert torch.equal(state["final.0.weight"], weight.float())


def test_mismatched_tensors_are_named(tmp_path):
    saved = tmp_path / "other.pth"
    state = tiny_state_dict(final__0__weight=torch.zeros(1, 64, 3, 3), last_upsample__layer__1__bias=None)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, saved)
    with pytest.raises(InputError) as caught:
        load_hpa_model(saved)
    message = str(caught.value)
    assert str(saved) in message and "\n" not in message
    for fragment in ("missing last_upsample.layer.1.bias", "unexpected extra.weight",
                     "final.0.weight has shape [1, 64, 3, 3], expected [3, 64, 3, 3]"):
        assert fragment in message


class Exploit:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def crafted_pickle(module: str, name: str, marker: Path) -> bytes:
    """A protocol-2 pickle calling ``module.name("touch marker")``; torch.load reads a non-zip
    file as the legacy format, whose first pickle is this one."""
    return f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("torch.hub", "load"),
                                          ("torch.nn.functional", "relu"), ("evil_pkg.models", "Gadget")])
def test_pickles_naming_other_globals_are_refused_unexecuted(tmp_path, module, name):
    marker, saved = tmp_path / "pwned", tmp_path / "crafted.pth"
    saved.write_bytes(crafted_pickle(module, name, marker))
    with pytest.raises(InputError, match=f"refused to unpickle {module}.{name}"):
        load_hpa_model(saved)
    assert not marker.exists()


def test_zip_format_exploit_is_refused_unexecuted(tmp_path):
    marker, saved = tmp_path / "pwned", tmp_path / "exploit.pth"
    torch.save({"final.0.weight": Exploit(marker)}, saved)
    with pytest.raises(InputError, match=r"refused to unpickle (posix|os|nt)\.system"):
        load_hpa_model(saved)
    assert not marker.exists()


def test_unreadable_odd_and_missing_files(tmp_path):
    garbage, listed, odd = tmp_path / "garbage.pth", tmp_path / "list.pth", tmp_path / "odd.pth"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(InputError, match="garbage.pth: not a readable PyTorch weights file"):
        load_hpa_model(garbage)
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InputError, match="list.pth: holds a list, not a model or a state_dict"):
        load_hpa_model(listed)
    oddity = type("Odd", (), {"__module__": "pytorch_zoo.unet", "__qualname__": "Odd"})
    instance = oddity()
    instance._modules = ["not", "a", "dict"]
    with mock.patch.object(ZOO_MODULES["pytorch_zoo.unet"], "Odd", oddity, create=True):
        save_with_zoo_importable(instance, odd)
    with pytest.raises(InputError, match="odd.pth: not a model or a state_dict"):
        load_hpa_model(odd)
    with pytest.raises(InputError, match="does not exist"):
        load_hpa_model(tmp_path / "absent.pth")


def mirror(server: FakeHPA) -> str:
    return f"{server.base}/weights"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("served") / "tiny.pth"
    torch.save(tiny_state_dict(), path)
    return path.read_bytes()


@pytest.fixture
def server(tiny_weights) -> Iterator[FakeHPA]:
    """Serves the nuclei weights (a valid file) and, as the cell weights, a login page."""
    yield from serve({f"/weights/{NUCLEI_WEIGHTS}": Behaviour(("ok", tiny_weights)),
                   f"/weights/{CELL_WEIGHTS}": Behaviour(("ok", b"<html>a login page</html>"))})


def test_download_happens_once_into_the_cache(server, tiny_weights, tmp_path):
    cache = tmp_path / "cache"
    path = resolve_weights(NUCLEI_WEIGHTS, None, cache, True, mirror(server), policy=FAST, progress=False)
    assert path == cache / NUCLEI_WEIGHTS and path.read_bytes() == tiny_weights
    assert resolve_weights(NUCLEI_WEIGHTS, None, cache, True, mirror(server), policy=FAST) == path
    assert server.requests == [f"/weights/{NUCLEI_WEIGHTS}"]
    assert [p.name for p in cache.iterdir()] == [NUCLEI_WEIGHTS]  # no temporary file left
    assert not all((cache / name).is_file() for name in HPA_WEIGHTS)


@pytest.mark.parametrize("name, served", [(NUCLEI_WEIGHTS, False), (CELL_WEIGHTS, True)],
                         ids=["404", "not-a-model"])
def test_failed_download_says_what_to_fetch_and_where_and_keeps_nothing(server, tmp_path, name, served):
    cache = tmp_path / "cache"
    if not served:
        del server.routes[f"/weights/{name}"]
    with pytest.raises(InputError) as caught:
        resolve_weights(name, None, cache, True, mirror(server), policy=FAST, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{name} ({server.base}/weights/{name})" in message and f"in {cache}" in message
    assert ("HTTP 404" in message) != served
    assert server.requests == [f"/weights/{name}"]
    assert not cache.exists() or not any(cache.iterdir())


def test_cache_hit_and_explicit_paths_need_no_network(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in HPA_WEIGHTS:
        (cache / name).write_bytes(b"cached")
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens there
    assert resolve_weights(CELL_WEIGHTS, None, cache, True, unreachable, policy=FAST) == cache / CELL_WEIGHTS
    assert all((cache / name).is_file() for name in HPA_WEIGHTS)
    own = tmp_path / "mine.pth"
    own.write_bytes(b"x")
    assert resolve_weights(NUCLEI_WEIGHTS, own, cache, False) == own
    with pytest.raises(InputError, match="absent.pth: dpn_unet_nuclei_v1.pth weights file does not exist"):
        resolve_weights(NUCLEI_WEIGHTS, tmp_path / "absent.pth", cache, True)


def test_missing_without_download_names_every_missing_file(tmp_path):
    with pytest.raises(InputError) as caught:
        resolve_weights(CELL_WEIGHTS, None, tmp_path, False)
    message = str(caught.value)
    assert "downloading is off" in message and f"place them in {tmp_path}" in message
    for name, url in HPA_WEIGHTS.items():
        assert f"{name} ({url})" in message


def test_official_urls_and_default_cache_dir(monkeypatch, tmp_path):
    assert HPA_WEIGHTS == {
        "dpn_unet_nuclei_v1.pth": "https://zenodo.org/record/4665863/files/dpn_unet_nuclei_v1.pth",
        "dpn_unet_cell_3ch_v1.pth": "https://zenodo.org/record/4665863/files/dpn_unet_cell_3ch_v1.pth",
    }
    monkeypatch.setenv("HPASC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "segmentation"
    monkeypatch.delenv("HPASC_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "hpasc" / "segmentation"
