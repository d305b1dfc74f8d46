"""Batch augmentation of cell tiles on the training device, the 4th place's recipes.

A batch is a float tensor (B, 4, S, S) in [0, 1], cells centred on a zero background. Every sample
gets a random horizontal and vertical flip and a rotation by an angle in [-90°, +90°] (zero fill,
same size); the ``-r`` recipe adds a random loss of resolution (resize down to 256..384 px and back
for S = 512), the ``-p`` recipe a rarer one followed by a random zero padding of each side by
0..200 px and a resize back to S×S, which shrinks and shifts the cell. Pixel sizes are given for
``reference_size`` = 512 (the 4th place's tiles) and scaled by S / 512.

The order is the 4th place's: resize, pad, flips, rotation. Pad, flips and rotation compose into one
affine map per sample applied by a single ``grid_sample``; samples that are only flipped take
``torch.flip`` instead, because ``affine_grid`` rounds pixel centres and a flip would then blur by
up to ~1e-4. Random parameters come from a CPU generator, so a seed gives the same augmentation on
CPU and GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges of the augmentation; pixel ranges are for tiles of ``reference_size``.

    Ranges are inclusive: angles uniform in ``rotate_degrees``, resize sides and per-side pads
    uniform integers in ``resize_range`` and ``pad_range``. The defaults are flips and rotation
    only; ``from_flags`` gives the ``-r`` and ``-p`` recipes.
    """

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rotate_p: float = 1.0
    rotate_degrees: tuple[float, float] = (-90.0, 90.0)
    resize_p: float = 0.0
    resize_range: tuple[int, int] = (256, 384)
    pad_p: float = 0.0
    pad_range: tuple[int, int] = (0, 200)
    reference_size: int = 512

    def __post_init__(self) -> None:
        probabilities = (self.hflip_p, self.vflip_p, self.rotate_p, self.resize_p, self.pad_p)
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError(f"augmentation probabilities must lie in [0, 1]: {self}")
        low, high = self.rotate_degrees
        if not low <= high:
            raise ValueError(f"empty rotation range {self.rotate_degrees}")
        low, high = self.resize_range
        if not 1 <= low <= high:
            raise ValueError(f"bad resize range {self.resize_range}")
        low, high = self.pad_range
        if not 0 <= low <= high or self.reference_size < 1:
            raise ValueError(f"bad pad range {self.pad_range} or reference size {self.reference_size}")

    @classmethod
    def from_flags(cls, random_resize: bool, resize_and_pad: bool) -> AugmentSettings:
        """The 4th place's recipes: flips and rotation, plus ``-r`` (resize) or ``-p`` (resize, pad)."""
        if random_resize and resize_and_pad:
            raise ValueError("random resize (-r) and resize-and-pad (-p) are alternative recipes")
        if random_resize:
            return cls(resize_p=0.4)
        if resize_and_pad:
            return cls(resize_p=0.3, pad_p=0.3)
        return cls()

    @property
    def name(self) -> str:
        """The steps that can happen, in order, e.g. ``resize+pad+flip+rotate``; ``none`` if none."""
        steps = {
            "resize": self.resize_p > 0,
            "pad": self.pad_p > 0 and self.pad_range[1] > 0,
            "flip": self.hflip_p > 0 or self.vflip_p > 0,
            "rotate": self.rotate_p > 0 and self.rotate_degrees != (0.0, 0.0),
        }
        return "+".join(step for step, on in steps.items() if on) or "none"

    def to_dict(self) -> dict[str, float | int | list[float] | list[int]]:
        """Plain JSON-friendly values (ranges as lists), for a checkpoint."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> AugmentSettings:
        """Settings saved by ``to_dict``; unknown keys are an error, missing ones take the defaults."""
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown augmentation settings {sorted(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in values.items()})


@dataclass(frozen=True)
class _Draws:
    """One batch's random parameters, on the CPU; pads are pixels (left, right, top, bottom) at S."""

    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) float64 degrees, 0 where no rotation
    resize: torch.Tensor  # (B,) int64 side, 0 where no resize
    pad: torch.Tensor  # (B, 4) int64


def _uniform_int(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    return (low + torch.floor(u * (high - low + 1))).clamp(max=high).to(torch.int64)


def _scaled(pixels: torch.Tensor, size: int, settings: AugmentSettings) -> torch.Tensor:
    return torch.round(pixels * (size / settings.reference_size)).to(torch.int64)


def _draw(settings: AugmentSettings, batch: int, size: int, generator: torch.Generator) -> _Draws:
    # A fixed number of draws per sample, whatever the settings, keeps the stream easy to reason about.
    u = torch.rand((batch, 11), generator=generator, dtype=torch.float64)
    angle = settings.rotate_degrees[0] + u[:, 3] * (settings.rotate_degrees[1] - settings.rotate_degrees[0])
    resize = _scaled(_uniform_int(u[:, 5], *settings.resize_range), size, settings).clamp(min=1)
    pad = _scaled(_uniform_int(u[:, 7:11], *settings.pad_range), size, settings)
    return _Draws(
        hflip=u[:, 0] < settings.hflip_p,
        vflip=u[:, 1] < settings.vflip_p,
        angle=torch.where(u[:, 2] < settings.rotate_p, angle, 0.0),
        resize=torch.where(u[:, 4] < settings.resize_p, resize, 0),
        pad=torch.where((u[:, 6] < settings.pad_p)[:, None], pad, 0),
    )


def _affine(draws: _Draws, size: int) -> torch.Tensor:
    """(B, 2, 3) maps from output to input coordinates in [-1, 1]: pad, then flips, then rotation."""
    batch = draws.angle.shape[0]
    left, right, top, bottom = draws.pad.to(torch.float64).unbind(1)
    # The padded image, stretched back to S×S, is the original seen through a zoom out and a shift.
    pad = torch.zeros((batch, 3, 3), dtype=torch.float64)
    pad[:, 0, 0] = (size + left + right) / size
    pad[:, 0, 2] = (right - left) / size
    pad[:, 1, 1] = (size + top + bottom) / size
    pad[:, 1, 2] = (bottom - top) / size
    pad[:, 2, 2] = 1.0
    ones = torch.ones(batch, dtype=torch.float64)
    flip = torch.diag_embed(torch.stack([torch.where(draws.hflip, -ones, ones),
                                         torch.where(draws.vflip, -ones, ones), ones], dim=1))
    # torchvision's positive angles turn the image anticlockwise; with y pointing down the output
    # pixel (x, y) then reads the input at (x cos - y sin, x sin + y cos).
    radians = torch.deg2rad(draws.angle)
    cos, sin = torch.cos(radians), torch.sin(radians)
    rotation = torch.zeros((batch, 3, 3), dtype=torch.float64)
    rotation[:, 0, 0], rotation[:, 0, 1] = cos, -sin
    rotation[:, 1, 0], rotation[:, 1, 1] = sin, cos
    rotation[:, 2, 2] = 1.0
    return (pad @ flip @ rotation)[:, :2]


def _resize_down_up(x: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Samples with a nonzero side are shrunk to it (antialiased) and enlarged back to S."""
    chosen = sides.nonzero()[:, 0].tolist()
    if not chosen:
        return x
    x = x.clone()
    size = x.shape[-1]
    for i in chosen:
        side = int(sides[i])
        small = F.interpolate(x[i:i + 1], size=(side, side), mode="bilinear", align_corners=False,
                              antialias=True)
        x[i:i + 1] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return x


def _on(device: torch.device, drawn: torch.Tensor) -> torch.Tensor:
    """A tensor of drawn parameters on ``device``. To a GPU from page-locked memory: a copy from
    ordinary memory would make the host wait for all the work queued before it, every step."""
    if device.type != "cuda":
        return drawn.to(device)
    return drawn.pin_memory().to(device, non_blocking=True)


def _flip(x: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor) -> torch.Tensor:
    hflip, vflip = (_on(x.device, flag).view(-1, 1, 1, 1) for flag in (hflip, vflip))
    x = torch.where(hflip, x.flip(-1), x)
    return torch.where(vflip, x.flip(-2), x)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(_on(x.device, theta.to(torch.float32)), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(x: torch.Tensor, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """A randomly augmented copy of the batch ``x`` (B, C, S, S), same shape, dtype and device.

    ``generator`` is a CPU generator; all random parameters are drawn from it. The work is done in
    float32 with autocast off, whatever the caller's autocast context.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected a batch of square images (B, C, S, S), got {tuple(x.shape)}")
    batch, size = x.shape[0], x.shape[-1]
    draws = _draw(settings, batch, size, generator)
    with torch.autocast(device_type=x.device.type, enabled=False):
        image = _resize_down_up(x.float(), draws.resize)
        flip_only = (draws.angle == 0) & (draws.pad == 0).all(dim=1)
        warped = ~flip_only
        out = torch.empty_like(image)
        if flip_only.any():
            rows = _on(x.device, flip_only.nonzero()[:, 0])
            out[rows] = _flip(image[rows], draws.hflip[flip_only], draws.vflip[flip_only])
        if warped.any():
            rows = _on(x.device, warped.nonzero()[:, 0])
            out[rows] = _warp(image[rows], _affine(draws, size)[warped])
    return out.to(x.dtype)

