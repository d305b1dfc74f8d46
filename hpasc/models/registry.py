"""The architectures by name: one entry says how to build a backbone for 4-channel cells, how to
start it from ImageNet weights, and which of its layers Grad-CAM explains.

Families of architectures come from two places: every module of :mod:`hpasc.models.backbones`
(each declares its ``FAMILY``: the EfficientNets of ``efficientnet_pytorch``, the 4th place's
library, named ``efficientnet-b0`` … ``efficientnet-b4``, and any model of ``timm``, named
``timm:NAME``), and :func:`register_family` for code outside the package (a notebook, a plugin).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from torch import nn

from hpasc.core.errors import InputError
from hpasc.models import backbones
from hpasc.models.architecture import Architecture, BackboneFamily

_REGISTERED: list[BackboneFamily] = []


def register_family(family: BackboneFamily) -> BackboneFamily:
    """Make ``family``'s architectures known to every stage and tool of this process."""
    _REGISTERED.append(family)
    return family


@functools.cache
def _shipped() -> tuple[BackboneFamily, ...]:
    return tuple(importlib.import_module(f"{backbones.__name__}.{module.name}").FAMILY
                 for module in pkgutil.iter_modules(backbones.__path__))


def architecture(name: str) -> Architecture:
    """The entry for ``name``; InputError naming the known architectures otherwise."""
    families = (*_shipped(), *_REGISTERED)
    owner = next((family for family in families if family.owns(name)), None)
    if owner is None:
        raise InputError(f"unknown architecture {name!r}; expected one of {'; '.join(f.names for f in families)}")
    return owner.find(name)


def create_model(arch: str, num_outputs: int, in_channels: int = 4, tile_size: int = 512) -> nn.Module:
    """A randomly initialised ``arch`` taking (B, in_channels, tile_size, tile_size) floats to
    (B, num_outputs) logits (no sigmoid: the losses and scoring apply it themselves)."""
    return architecture(arch).build(num_outputs, in_channels, tile_size)


def short_name(arch: str) -> str:
    """``b0`` for efficientnet-b0, ``convnext_tiny`` for timm:convnext_tiny: for run names."""
    return arch.split(":", 1)[-1].removeprefix("efficientnet-")
