"""The EfficientNets of ``efficientnet_pytorch`` (the 4th place's library) and their ImageNet start.

Models are built for 4-channel input (red, green, blue, yellow) and one logit per output class.
ImageNet weights are 3-channel with a 1000-class head; :func:`adapt_imagenet_state` fits them to
our models by giving each extra input channel the mean of the RGB stem filters and leaving the
head freshly initialised. The weight files are fetched once into a cache; without a network,
training starts from scratch with one warning instead of failing.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import url_map
from torch import Tensor, nn

from hpasc.core import weights_cache
from hpasc.core.errors import InputError
from hpasc.core.http import FetchError, HttpPolicy
from hpasc.core.weights_cache import one_line
from hpasc.models.architecture import Architecture, BackboneFamily, Pretrained

log = logging.getLogger(__name__)

_STEM = "_conv_stem.weight"
_HEAD = "_fc."
_RGB = 3


def _build(arch: str, num_outputs: int, in_channels: int, tile_size: int) -> nn.Module:
    # The static "same" padding is computed for tile_size, which also keeps the model exportable.
    # BatchNorm momentum 0.1 (PyTorch's default) instead of the TensorFlow port's 0.01: the running
    # statistics then settle within ~50 steps, so short runs (CPU, fine-tuning) validate sensibly;
    # over the thousands of steps of a full run the two give the same statistics.
    return EfficientNet.from_name(arch, in_channels=in_channels, num_classes=num_outputs,
                                  image_size=tile_size, batch_norm_momentum=0.9)


def _initialise(arch: str, model: nn.Module, in_channels: int, pretrained: Pretrained) -> str | None:
    weights = resolve_pretrained(pretrained.source, arch, cache_dir=pretrained.cache_dir,
                                 base_url=pretrained.base_url, download=pretrained.download,
                                 policy=pretrained.policy, progress=pretrained.progress)
    if weights is not None:
        load_pretrained(model, arch, weights, in_channels)
    return None if weights is None else str(weights)


# Grad-CAM targets, all at the final, coarsest resolution: the 1×1 head convolution (the default),
# the last MBConv block, and the batch norm after the head convolution.
_CAM_LAYERS = {"conv_head": lambda model: model._conv_head, "last_block": lambda model: model._blocks[-1],
               "bn1": lambda model: model._bn1}


def _entry(arch: str, default_tile_size: int) -> Architecture:
    return Architecture(arch, default_tile_size, functools.partial(_build, arch),
                        functools.partial(_initialise, arch), _CAM_LAYERS, lambda model: model._fc)


ARCHITECTURES: dict[str, Architecture] = {
    entry.name: entry for entry in (
        _entry("efficientnet-b0", 512),
        _entry("efficientnet-b1", 512),
        _entry("efficientnet-b2", 260),  # the B2 recipe trains on smaller tiles
        _entry("efficientnet-b3", 512),
        _entry("efficientnet-b4", 512),
    )
}
IMAGENET_URLS: dict[str, str] = {name: url_map[name] for name in ARCHITECTURES}
FAMILY = BackboneFamily(", ".join(ARCHITECTURES), ARCHITECTURES.__contains__, ARCHITECTURES.__getitem__)


def _architecture(arch: str) -> Architecture:
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def _stem_with_extra_channels(rgb: Tensor, in_channels: int) -> Tensor:
    """The stem filters for ``in_channels`` inputs: RGB's own, then their mean for each extra one."""
    mean = rgb.mean(dim=1, keepdim=True)
    return torch.cat([rgb, mean.expand(-1, in_channels - _RGB, -1, -1)], dim=1)


def adapt_imagenet_state(state: dict[str, Tensor], model_state: dict[str, Tensor],
                         in_channels: int) -> dict[str, Tensor]:
    """An ImageNet state_dict (3-channel stem, 1000-class head) made into one for our model.

    ``model_state`` is the target model's own state_dict: its head is kept (the class count
    differs), BatchNorm counters absent from ``state`` are taken from it, and every other tensor
    must be in ``state`` with the model's shape. Raises InputError listing the first misfits.
    """
    if in_channels < _RGB:
        raise ValueError(f"ImageNet weights need at least {_RGB} input channels, not {in_channels}")
    adapted: dict[str, Tensor] = {}
    problems: list[str] = []
    for key, target in model_state.items():
        if key.startswith(_HEAD):
            adapted[key] = target
            continue
        if key not in state:
            if key.endswith("num_batches_tracked"):  # optional in older files, as for load_state_dict
                adapted[key] = target
            else:
                problems.append(f"missing {key}")
            continue
        value = state[key]
        if key == _STEM and value.dim() == 4 and value.shape[1] == _RGB:
            value = _stem_with_extra_channels(value, in_channels)
        if value.shape != target.shape:
            problems.append(f"{key} has shape {list(state[key].shape)}, expected {list(target.shape)}")
        else:
            adapted[key] = value.detach().to(target.dtype)
    problems += [f"unexpected {key}" for key in state if key not in model_state and not key.startswith(_HEAD)]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError(f"the state_dict does not fit the model: {'; '.join(problems[:3])}{more}")
    return adapted


def _read_state(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # anything a truncated or foreign file can raise
        raise InputError(f"{path}: not a readable PyTorch weights file ({one_line(exc)})") from None
    if not isinstance(state, dict) or not isinstance(state.get(_STEM), Tensor):
        raise InputError(f"{path}: not an EfficientNet state_dict (no {_STEM})")
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise InputError(f"{path}: not a state_dict (it holds more than named tensors)")
    return state


def _adapt_file(path: Path, arch: str, model_state: dict[str, Tensor], in_channels: int) -> dict[str, Tensor]:
    state = _read_state(path)
    try:
        return adapt_imagenet_state(state, model_state, in_channels)
    except InputError as exc:
        raise InputError(f"{path}: not {arch} ImageNet weights ({exc})") from None


def _check_download(path: Path, arch: str) -> None:
    """Raise InputError unless ``path`` holds ImageNet weights that fit ``arch``."""
    entry = _architecture(arch)
    with torch.device("meta"):  # shapes only: no memory and no initialisation
        reference = entry.build(1000, _RGB, entry.default_tile_size).state_dict()
    _adapt_file(path, arch, reference, _RGB)


def default_cache_dir() -> Path:
    """``$HPASC_CACHE/imagenet`` if HPASC_CACHE is set, else ``~/.cache/hpasc/imagenet``."""
    return weights_cache.default_cache_dir("imagenet")


def resolve_pretrained(spec: str, arch: str, *, cache_dir: Path | None = None, base_url: str | None = None,
                       download: bool = True, policy: HttpPolicy = HttpPolicy(),
                       progress: bool = True) -> Path | None:
    """The ImageNet weights file to start ``arch`` from, or None to train from scratch.

    ``spec`` is "none"; "auto": the file in ``cache_dir`` (default :func:`default_cache_dir`),
    else, if ``download``, fetched there once (from ``base_url``/file name if given, e.g. a
    mirror, else the official URL), else None with one warning; or the path of a weights file,
    which must exist.
    """
    _architecture(arch)
    if spec != "auto":
        return Pretrained(spec).weights_file
    name = IMAGENET_URLS[arch].rsplit("/", 1)[-1]
    cached = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    if cached.is_file():
        return cached
    if not download:
        reason = f"{name} is not in {cached.parent} and downloading is off"
    else:
        url = f"{base_url.rstrip('/')}/{name}" if base_url else IMAGENET_URLS[arch]
        try:
            weights_cache.download(url, cached, lambda path: _check_download(path, arch), policy, progress)
            return cached
        except (FetchError, ValueError, OSError) as exc:  # ValueError: a malformed base_url
            reason = one_line(exc)
    log.warning("ImageNet weights for %s unavailable (%s); training from scratch", arch, reason)
    return None


def load_pretrained(model: nn.Module, arch: str, path: Path, in_channels: int) -> None:
    """Initialise ``model`` (an ``arch`` built by its entry) from the ImageNet weights in ``path``."""
    model.load_state_dict(_adapt_file(Path(path), arch, model.state_dict(), in_channels), strict=True)
