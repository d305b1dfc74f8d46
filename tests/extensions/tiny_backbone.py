"""A backbone family of one small convolutional network, named ``tiny:cnn``."""

from __future__ import annotations

import torch
from torch import nn

from hpasc.core.errors import InputError
from hpasc.models.architecture import Architecture, BackboneFamily, Pretrained

PREFIX = "tiny:"


class TinyCnn(nn.Module):
    def __init__(self, num_outputs: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _initialise(model: nn.Module, in_channels: int, pretrained: Pretrained) -> str | None:
    return None  # no ImageNet weights for this family


def _find(name: str) -> Architecture:
    if name != f"{PREFIX}cnn":
        raise InputError(f"the tiny family has only {PREFIX}cnn, not {name!r}")
    return Architecture(name, 16, lambda outputs, channels, _size: TinyCnn(outputs, channels), _initialise,
                        {"conv": lambda model: model.conv}, lambda model: model.head)


FAMILY = BackboneFamily(f"{PREFIX}cnn", lambda name: name.startswith(PREFIX), _find)
