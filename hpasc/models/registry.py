"""The architectures by name: one entry says how to build a backbone for 4-channel cells, how to
start it from ImageNet weights, and which of its layers Grad-CAM explains.

Two families are known: the EfficientNets of ``efficientnet_pytorch`` (the 4th place's library,
named ``efficientnet-b0`` … ``efficientnet-b4``) and any model of ``timm``, named ``timm:NAME``
(e.g. ``timm:inception_v3``, ``timm:convnext_tiny``). Adding a backbone family means writing one
module that returns :class:`Architecture` entries and naming it in :func:`architecture`.
"""

from __future__ import annotations

from torch import nn

from hpasc.core.errors import InputError
from hpasc.models import efficientnet
from hpasc.models.architecture import TIMM_PREFIX, Architecture


def architecture(name: str) -> Architecture:
    """The entry for ``name``; InputError naming the known architectures otherwise."""
    if name.startswith(TIMM_PREFIX):
        from hpasc.models import timm_backbones  # timm takes seconds to import: only when asked for

        return timm_backbones.architecture(name.removeprefix(TIMM_PREFIX))
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
