"""The architectures by name: one entry says how to build a backbone for 4-channel cells, how to
start it from ImageNet weights, and which of its layers Grad-CAM explains.

Two families are known: the EfficientNets of ``efficientnet_pytorch`` (the 4th place's library,
named ``efficientnet-b0`` … ``efficientnet-b4``) and any model of ``timm``, named ``timm:NAME``
(e.g. ``timm:inception_v3``, ``timm:convnext_tiny``). Adding a backbone family means writing one
module that returns :class:`Architecture` entries and naming it in :func:`architecture`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hpasc.http import HttpPolicy
from hpasc.errors import InputError

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class Pretrained:
    """Where ImageNet weights come from: ``source`` is "auto" (cache, else download, else from
    scratch with a warning), "none", or a weights file; the rest tunes the download."""

    source: str = "auto"
    base_url: str | None = None
    cache_dir: Path | None = None
    download: bool = True
    policy: HttpPolicy = HttpPolicy()
    progress: bool = True


@dataclass(frozen=True)
class Architecture:
    """A registered backbone.

    ``build(num_outputs, in_channels, tile_size)`` gives a randomly initialised model returning
    logits; ``initialise(model, in_channels, pretrained)`` loads ImageNet weights into it (the
    4-channel stem adapted, the head left fresh) and returns where they came from, or None when it
    stays as built; ``cam_layers`` maps Grad-CAM target layer names to their module, the first
    being the default.
    """

    name: str
    default_tile_size: int
    build: Callable[[int, int, int], nn.Module]
    initialise: Callable[[nn.Module, int, Pretrained], str | None]
    cam_layers: Mapping[str, Callable[[nn.Module], nn.Module]]

    @property
    def default_cam_layer(self) -> str:
        return next(iter(self.cam_layers))

    def cam_layer(self, model: nn.Module, layer: str | None = None) -> nn.Module:
        """The module of ``model`` that Grad-CAM explains (``layer`` None: the default one)."""
        layer = layer or self.default_cam_layer
        if layer not in self.cam_layers:
            raise InputError(f"{self.name} has no Grad-CAM layer {layer!r}; expected one of "
                             f"{', '.join(self.cam_layers)}")
        return self.cam_layers[layer](model)


def architecture(name: str) -> Architecture:
    """The entry for ``name``; InputError naming the known architectures otherwise."""
    if name.startswith(TIMM_PREFIX):
        from hpasc.models import timm_backbones  # timm takes seconds to import: only when asked for

        return timm_backbones.architecture(name.removeprefix(TIMM_PREFIX))
    from hpasc.models import efficientnet

    if name not in efficientnet.ARCHITECTURES:
        raise InputError(f"unknown architecture {name!r}; expected one of "
                         f"{', '.join(efficientnet.ARCHITECTURES)} or {TIMM_PREFIX}NAME (any timm model)")
    return efficientnet.ARCHITECTURES[name]


def create_model(arch: str, num_outputs: int, in_channels: int = 4, tile_size: int = 512) -> nn.Module:
    """A randomly initialised ``arch`` taking (B, in_channels, tile_size, tile_size) floats to
    (B, num_outputs) logits (no sigmoid: the losses and scoring apply it themselves)."""
    return architecture(arch).build(num_outputs, in_channels, tile_size)


def short_name(arch: str) -> str:
    """``b0`` for efficientnet-b0, ``convnext_tiny`` for timm:convnext_tiny: for run names."""
    return arch.removeprefix("efficientnet-").removeprefix(TIMM_PREFIX)
