"""Classification losses on logits and soft targets, one value per sample.

A loss takes logits and targets of shape (B, K), targets in [0, 1], and returns (B,): the mean over
the K classes, so the trainer can weight samples before averaging. Both are computed in float32,
also under autocast, because float16 losses of confident logits underflow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _elementwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over classes: (B, K) -> (B,)."""
    return _elementwise_bce(logits, targets).mean(dim=1)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0,
               gamma: float = 2.0) -> torch.Tensor:
    """The 4th place's focal loss, alpha (1 - pt)^gamma bce with pt = exp(-bce), averaged over classes.

    With a soft target pt never reaches 1, so the loss stays above zero at its minimum, which is
    where the bce's is (the focal loss grows with the bce).
    """
    bce = _elementwise_bce(logits, targets)
    pt = torch.exp(-bce)
    return (alpha * (1 - pt) ** gamma * bce).mean(dim=1)


LOSSES: dict[str, Loss] = {"bce": bce_loss, "focal": focal_loss}


def create_loss(name: str) -> Loss:
    """The per-sample loss registered as ``name`` (see ``LOSSES``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
