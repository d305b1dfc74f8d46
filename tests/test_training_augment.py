"""Batch augmentation: exact flips, rotation against torch/torchvision, pad geometry, resize blur."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from hpasc.stages.train.augment import AugmentSettings, _draw, augment_batch

NO_CHANGE = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blob(size: int = 64, sigma: float = 6.0, centre: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """A (1, 4, S, S) Gaussian blob ``centre`` (y, x) pixels off the middle, one brightness per channel."""
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    y, x = axis[:, None] - centre[0], axis[None, :] - centre[1]
    image = torch.exp(-(y**2 + x**2) / (2 * sigma**2))
    return torch.stack([image * level for level in (1.0, 0.8, 0.5, 0.3)])[None]


def test_output_keeps_shape_dtype_device_and_input() -> None:
    x = torch.rand(6, 4, 32, 32)
    before = x.clone()
    recipes = [AugmentSettings.from_flags(r, p) for r, p in ((False, False), (True, False), (False, True))]
    for settings in recipes:
        out = augment_batch(x, settings, seeded())
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before)
    half = augment_batch(x.half(), AugmentSettings(), seeded())
    assert half.dtype == torch.float16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert augment_batch(x, AugmentSettings(), seeded()).dtype == torch.float32


def test_same_seed_same_output_other_seed_differs() -> None:
    x = torch.rand(8, 4, 32, 32)
    settings = AugmentSettings.from_flags(random_resize=False, resize_and_pad=True)
    assert torch.equal(augment_batch(x, settings, seeded(3)), augment_batch(x, settings, seeded(3)))
    assert not torch.allclose(augment_batch(x, settings, seeded(3)), augment_batch(x, settings, seeded(4)))


@pytest.mark.parametrize("size", [32, 96])
def test_pure_flips_are_exact(size: int) -> None:
    # 96 is not a power of two: affine_grid would misplace pixel centres there by ~1e-6 px.
    x = torch.rand(3, 4, size, size)
    flips = {(1.0, 0.0): (-1,), (0.0, 1.0): (-2,), (1.0, 1.0): (-2, -1)}
    for (hflip_p, vflip_p), dims in flips.items():
        settings = AugmentSettings(hflip_p=hflip_p, vflip_p=vflip_p, rotate_p=0.0)
        assert torch.equal(augment_batch(x, settings, seeded()), torch.flip(x, dims))
    assert torch.equal(augment_batch(x, NO_CHANGE, seeded()), x)
    zero_range = AugmentSettings(hflip_p=1.0, vflip_p=0.0, rotate_degrees=(0.0, 0.0))
    assert torch.equal(augment_batch(x, zero_range, seeded()), torch.flip(x, (-1,)))


def test_rotation_by_90_degrees_is_rot90() -> None:
    x = torch.rand(2, 4, 64, 64)
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_degrees=(90.0, 90.0))
    expected = torch.rot90(x, 1, dims=(-2, -1))
    assert (augment_batch(x, settings, seeded()) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("angle", [-90.0, -37.0, 25.0])
def test_rotation_matches_torchvision(angle: float) -> None:
    # The 4th place rotated with torchvision (positive = anticlockwise, zero fill).
    x = torch.zeros(1, 4, 48, 48)
    x[..., 12:36, 10:38] = torch.rand(1, 4, 24, 28, generator=seeded(1))
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_degrees=(angle, angle))
    expected = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
    assert (augment_batch(x, settings, seeded()) - expected).abs().max() < 1e-4


def test_rotation_keeps_the_mass_of_a_centred_cell() -> None:
    x = blob().repeat(16, 1, 1, 1)
    out = augment_batch(x, AugmentSettings(), seeded(5))
    ratio = out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert ((ratio - 1).abs() < 0.03).all(), ratio


def test_padding_shrinks_the_image_into_a_central_window() -> None:
    # 32 px of pad per side on a 64 px tile gives 128 px, resized back to 64: margins of 16 px.
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, pad_p=1.0, pad_range=(128, 128),
                               reference_size=256)
    out = augment_batch(torch.ones(2, 4, 64, 64), settings, seeded())
    expected = torch.zeros(2, 4, 64, 64)
    expected[..., 16:48, 16:48] = 1.0
    assert (out - expected).abs().max() < 1e-5


def test_padding_matches_pad_then_resize() -> None:
    # The affine map stands for the 4th place's "pad each side, resize back to S×S".
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, pad_p=1.0, pad_range=(0, 100),
                               reference_size=64)
    x = torch.rand(4, 4, 64, 64)
    out = augment_batch(x, settings, seeded(6))
    pads = _draw(settings, 4, 64, seeded(6)).pad
    assert len(set(pads.flatten().tolist())) > 4
    for i, (left, right, top, bottom) in enumerate(pads.tolist()):
        padded = torch.nn.functional.pad(x[i:i + 1], (left, right, top, bottom))
        expected = torch.nn.functional.interpolate(padded, size=(64, 64), mode="bilinear",
                                                   align_corners=False)
        assert (out[i:i + 1] - expected).abs().max() < 1e-4


def test_steps_compose_in_the_4th_place_order() -> None:
    # Pad, then flips, then rotation, each done on its own, on an off-centre blob smooth enough
    # for one resampling and three to agree.
    settings = AugmentSettings(pad_p=1.0, pad_range=(0, 24), reference_size=64)
    x = blob(sigma=5.0, centre=(-9.0, 14.0)).repeat(8, 1, 1, 1)
    out = augment_batch(x, settings, seeded(8))
    draws = _draw(settings, 8, 64, seeded(8))
    for i in range(8):
        step = torch.nn.functional.pad(x[i:i + 1], tuple(draws.pad[i].tolist()))
        step = torch.nn.functional.interpolate(step, size=(64, 64), mode="bilinear", align_corners=False)
        step = step.flip(-1) if draws.hflip[i] else step
        step = step.flip(-2) if draws.vflip[i] else step
        step = TF.rotate(step, float(draws.angle[i]), interpolation=InterpolationMode.BILINEAR)
        assert (out[i:i + 1] - step).abs().max() < 0.05


def test_padding_sides_are_drawn_independently() -> None:
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, pad_p=1.0, pad_range=(0, 200))
    out = augment_batch(torch.ones(16, 1, 64, 64), settings, seeded(2))
    filled = out > 0.5
    columns, rows = filled.any(dim=2)[:, 0], filled.any(dim=3)[:, 0]
    left = columns.float().argmax(dim=1)
    right = 63 - columns.flip(1).float().argmax(dim=1)
    top = rows.float().argmax(dim=1)
    # Independent sides shift the window and change its aspect ratio, not only shrink it.
    assert len(set(left.tolist())) > 1 and not torch.equal(left, 63 - right)
    assert not torch.equal(columns.sum(1), rows.sum(1)) and not torch.equal(left, top)


def test_resize_down_and_up_blurs_but_keeps_the_mean() -> None:
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, resize_p=1.0)
    index = torch.arange(64)
    checkerboard = ((index[:, None] + index[None, :]) % 2).float().expand(4, 4, 64, 64)
    smooth = blob()
    for x in (checkerboard, smooth):
        out = augment_batch(x, settings, seeded(7))
        assert abs(out.mean().item() / x.mean().item() - 1) < 0.02
    out = augment_batch(checkerboard, settings, seeded(7))
    # Antialiased shrinking turns the finest pattern into a flat grey; plain bilinear would alias.
    assert (out.var(dim=(2, 3)) < 0.01 * checkerboard.var(dim=(2, 3))).all()


def test_resize_probability_selects_samples() -> None:
    settings = AugmentSettings(hflip_p=0.0, vflip_p=0.0, rotate_p=0.0, resize_p=0.4)
    x = torch.rand(200, 1, 16, 16)
    changed = (augment_batch(x, settings, seeded(11)) != x).flatten(1).any(dim=1).float().mean().item()
    assert 0.3 < changed < 0.5


def test_settings_round_trip_and_recipes() -> None:
    for random_resize, resize_and_pad in ((False, False), (True, False), (False, True)):
        settings = AugmentSettings.from_flags(random_resize, resize_and_pad)
        assert AugmentSettings.from_dict(settings.to_dict()) == settings
    assert AugmentSettings.from_flags(False, False).name == "flip+rotate"
    assert AugmentSettings.from_flags(True, False) == AugmentSettings(resize_p=0.4)
    assert AugmentSettings.from_flags(False, True).name == "resize+pad+flip+rotate"
    with pytest.raises(ValueError):
        AugmentSettings.from_flags(True, True)
    with pytest.raises(ValueError):
        AugmentSettings.from_dict({"hflip_p": 0.5, "sharpen": 1.0})
    with pytest.raises(ValueError):
        AugmentSettings(resize_range=(0, 10))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_for_the_same_seed() -> None:
    x = torch.rand(8, 4, 64, 64)
    settings = AugmentSettings.from_flags(random_resize=False, resize_and_pad=True)
    on_cpu = augment_batch(x, settings, seeded(9))
    on_gpu = augment_batch(x.cuda(), settings, seeded(9))
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().max() < 1e-4
    with torch.autocast("cuda", dtype=torch.float16):
        assert augment_batch(x.cuda(), settings, seeded(9)).dtype == torch.float32
