"""Any ``timm`` model as a backbone, named ``timm:NAME`` (e.g. ``timm:inception_v3``). timm is
imported when such a name is asked for: it takes seconds to import.

timm adapts the stem to 4 input channels itself (``in_chans``: the RGB filters repeated and
rescaled), both for a fresh model and for ImageNet weights, and drops the 1000-class head when the
class count differs. ImageNet weights come through timm's own cache (the Hugging Face hub) when
online, or from a local weights file; offline, "auto" trains from scratch with one warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

from torch import nn

from hpasc.core.errors import InputError
from hpasc.core.http import FetchError, check_reachable
from hpasc.core.weights_cache import one_line
from hpasc.models.architecture import TIMM_PREFIX, Architecture, BackboneFamily, Pretrained

log = logging.getLogger(__name__)
_FALLBACK_TILE_SIZE = 224


def _build(name: str, num_outputs: int, in_channels: int, tile_size: int) -> nn.Module:
    import timm

    # timm's models take any input size: tile_size only matters to the EfficientNets' static padding.
    return timm.create_model(name, pretrained=False, num_classes=num_outputs, in_chans=in_channels)


def _initialise(name: str, model: nn.Module, in_channels: int, pretrained: Pretrained) -> str | None:
    if pretrained.source == "none":
        return None
    import timm

    weights_file = pretrained.weights_file
    overlay = {"file": str(weights_file)} if weights_file else None
    try:
        with contextlib.nullcontext() if weights_file else _cache_only_unless_reachable(pretrained.policy.timeout):
            donor = timm.create_model(name, pretrained=True, num_classes=model.num_classes, in_chans=in_channels,
                                      pretrained_cfg_overlay=overlay)
    except Exception as exc:  # the hub's network and cache errors, or a file that does not fit
        if weights_file is not None:
            raise InputError(f"{weights_file}: not ImageNet weights of {name} ({one_line(exc)})") from None
        log.warning("ImageNet weights for %s%s unavailable (%s); training from scratch",
                    TIMM_PREFIX, name, one_line(exc))
        return None
    model.load_state_dict(donor.state_dict())
    return str(weights_file) if weights_file else "timm's pretrained weights"


@contextlib.contextmanager
def _cache_only_unless_reachable(timeout: float) -> Iterator[None]:
    """The Hugging Face hub in offline mode (its cache only) for the block when one connection to
    its host fails: offline, its client retried for 14-45 s before giving up."""
    from huggingface_hub import constants

    try:
        check_reachable(constants.ENDPOINT, timeout)
    except FetchError as exc:
        log.debug("%s: the hub's cache only", exc)
        offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = offline
        return
    yield


def _last_stage(model: nn.Module) -> nn.Module:
    """The module whose output is the model's last feature map (timm's own feature_info)."""
    return model.get_submodule(model.feature_info[-1]["module"])


@functools.cache
def architecture(name: str) -> Architecture:
    """The entry for timm model ``name``; InputError if timm has no such model."""
    import timm

    if not timm.is_model(name):
        raise InputError(f"timm has no model {name!r} (see timm.list_models())")
    config = timm.get_pretrained_cfg(name)
    tile_size = config.input_size[-1] if config is not None else _FALLBACK_TILE_SIZE
    return Architecture(f"{TIMM_PREFIX}{name}", tile_size, functools.partial(_build, name),
                        functools.partial(_initialise, name), {"last_stage": _last_stage},
                        lambda model: model.get_classifier())


FAMILY = BackboneFamily(f"{TIMM_PREFIX}NAME (any timm model)", lambda name: name.startswith(TIMM_PREFIX),
                        lambda name: architecture(name.removeprefix(TIMM_PREFIX)))
