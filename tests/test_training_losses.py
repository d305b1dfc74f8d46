"""Per-sample BCE and focal losses: hand-computed values, soft targets, stability, float32 output."""

from __future__ import annotations

import math

import pytest
import torch

from hpasc.stages.train.losses import LOSSES, create_loss

LOGITS = [[0.0, 2.0], [-1.0, 3.0]]
TARGETS = [[1.0, 0.0], [0.5, 1.0]]


def test_two_by_two_literal_values() -> None:
    # Row 0: ln 2 and ln(1 + e²); row 1: ln(1 + e⁻¹) + ½ and ln(1 + e⁻³). Focal weights: (1 - e^-bce)².
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    expected = {"bce": [1.410038, 0.430925], "focal": [0.911682, 0.126026]}
    for name, values in expected.items():
        loss = create_loss(name)(logits, targets)
        assert loss.shape == (2,)
        assert torch.allclose(loss, torch.tensor(values), atol=1e-6)


def test_focal_is_at_most_bce_per_element() -> None:
    logits = torch.randn(64, 1, generator=torch.Generator().manual_seed(0)) * 4
    targets = torch.rand(64, 1, generator=torch.Generator().manual_seed(1))
    bce, focal = create_loss("bce")(logits, targets), create_loss("focal")(logits, targets)
    assert (focal <= bce).all() and (focal < bce).any()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_soft_target_minimum_is_at_its_logit(name: str) -> None:
    best = math.log(0.7 / 0.3)
    logits = torch.tensor([[best - 0.5], [best], [best + 0.5]], requires_grad=True)
    loss = create_loss(name)(logits, torch.full((3, 1), 0.7))
    loss.sum().backward()
    below, at, above = logits.grad[:, 0].tolist()
    assert below < 0 < above and abs(at) < 1e-6
    # A soft target leaves a positive loss even at the best logit.
    assert loss[1] > 0.1 and loss[1] < loss[0] and loss[1] < loss[2]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_logits_give_finite_gradients(name: str) -> None:
    logits = torch.tensor([[50.0, -50.0, 50.0, -50.0]], requires_grad=True)
    loss = create_loss(name)(logits, torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    assert loss.item() > 1.0 and logits.grad[0, 2] > 0 and logits.grad[0, 3] < 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_inputs_give_float32(name: str) -> None:
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    loss = create_loss(name)(logits.half(), targets.half())
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, create_loss(name)(logits, targets), atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert create_loss(name)(logits @ torch.eye(2), targets).dtype == torch.float32


def test_unknown_loss_lists_the_names() -> None:
    with pytest.raises(ValueError, match="bce, focal"):
        create_loss("hinge")
