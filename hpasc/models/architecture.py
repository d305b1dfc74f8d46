"""What a backbone family provides for one architecture (:class:`Architecture`), a family itself
(:class:`BackboneFamily`), and where ImageNet weights come from (:class:`Pretrained`); the families
(:mod:`hpasc.models.backbones`, or registered by other code) build these, and
:mod:`~hpasc.models.registry` finds them by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hpasc.core.errors import InputError
from hpasc.core.http import HttpPolicy

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

    @property
    def weights_file(self) -> Path | None:
        """The weights file ``source`` names (None for "auto" and "none"); InputError if it is missing."""
        if self.source in ("auto", "none"):
            return None
        if not Path(self.source).is_file():
            raise InputError(f"{self.source}: ImageNet weights file does not exist")
        return Path(self.source)


@dataclass(frozen=True)
class Architecture:
    """A registered backbone.

    ``build(num_outputs, in_channels, tile_size)`` gives a randomly initialised model returning
    logits; ``initialise(model, in_channels, pretrained)`` loads ImageNet weights into it (the
    4-channel stem adapted, the head left fresh) and returns where they came from, or None when it
    stays as built; ``cam_layers`` maps Grad-CAM target layer names to their module, the first
    being the default; ``head`` gives the final linear layer, whose input is the cell's pooled
    feature vector (its embedding).
    """

    name: str
    default_tile_size: int
    build: Callable[[int, int, int], nn.Module]
    initialise: Callable[[nn.Module, int, Pretrained], str | None]
    cam_layers: Mapping[str, Callable[[nn.Module], nn.Module]]
    head: Callable[[nn.Module], nn.Module]

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


@dataclass(frozen=True)
class BackboneFamily:
    """A family of backbones: ``owns(name)`` says whether an architecture name is one of its,
    ``find(name)`` gives that name's :class:`Architecture` (InputError when the family has no such
    model), ``names`` describes its names in messages (e.g. ``timm:NAME (any timm model)``)."""

    names: str
    owns: Callable[[str], bool]
    find: Callable[[str], Architecture]
