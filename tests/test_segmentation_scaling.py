"""HPA's input scaling for the segmentation networks and the restoring of their output."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import transform, util

from hpasc.segmentation.scaling import Geometry, bit_depth_gain, prepare, restore, restore_both
from hpasc.tools.synthetic import synthesize_image


def eight_bit_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A synthetic image as 8-bit data scaled ×257 (what reading an 8-bit PNG gives)."""
    image = synthesize_image(shape, np.random.default_rng(seed)).image
    return (image // 257).astype(np.uint16) * 257


def test_prepare_is_hpas_computation() -> None:
    image = eight_bit_image((512, 512))
    # HPA: the 8-bit (red, yellow, blue) stack as float64 in [0, 1], rescaled by 0.25.
    stack = np.dstack([image[..., 0], image[..., 3], image[..., 2]]) // 257
    reference = transform.rescale(stack.astype(np.float64) / 255, 0.25, channel_axis=-1)

    prepared = prepare(image)

    assert prepared.cells.shape == (3, 128, 128) and prepared.cells.dtype == np.float32
    np.testing.assert_allclose(prepared.cells, reference.transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(prepared.nuclei, np.repeat(prepared.cells[2:], 3, axis=0))
    assert prepared.geometry == Geometry((512, 512), (128, 128), padded=False)


@pytest.mark.parametrize("shape", [(434, 602), (130, 100), (2050, 1990), (6, 10)])
def test_any_size_is_rescaled_as_scikit_image_does(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(shape[0]).integers(0, 65536, (*shape, 4), dtype=np.uint16)
    reference = transform.rescale(image[..., [0, 3, 2]] / 65535, 0.25, channel_axis=-1)
    rows, cols = reference.shape[:2]
    cells = prepare(image).cells
    if (rows, cols) != cells.shape[1:]:  # padded to multiples of 32
        cells = cells[:, 32:32 + rows, 32:32 + cols]
    np.testing.assert_allclose(cells, reference.transpose(2, 0, 1), atol=2e-7)


def test_sides_not_a_multiple_of_32_are_padded_like_hpa() -> None:
    prepared = prepare(eight_bit_image((432, 600)))  # scaled: 108 x 150
    rows, cols = 108, 150
    assert prepared.geometry == Geometry((432, 600), (rows, cols), padded=True)
    assert prepared.cells.shape == (3, 32 + rows + 32 - rows % 32, 32 + cols + 32 - cols % 32)
    assert all(side % 32 == 0 for side in prepared.cells.shape[1:])
    inner = prepared.cells[:, 32:32 + rows, 32:32 + cols]
    np.testing.assert_array_equal(prepared.cells[:, 31, 32:32 + cols], inner[:, 0])  # mirrored


def test_restore_keeps_orientation_and_size() -> None:
    geometry = Geometry((300, 500), (75, 125), padded=True)
    probabilities = np.zeros((3, 160, 192), np.float32)
    probabilities[1] = 1.0
    probabilities[2, 32:32 + 10, 32:32 + 20] = 1.0  # a block at the top left of the image
    probabilities[1, 32:32 + 10, 32:32 + 20] = 0.0

    restored = restore(probabilities, geometry, ubyte_first=False)

    assert restored.shape == (300, 500, 3) and restored.dtype == np.uint8
    assert not restored[..., 0].any()  # HPA zeroes the background channel
    assert restored[:40, :80, 2].min() == 255 and restored[:40, :80, 1].max() == 0
    assert restored[50:, 100:, 2].max() == 0 and restored[50:, 100:, 1].min() == 255


@pytest.mark.parametrize("value", [0.0, 0.2, 0.5, 0.77, 1.0])
def test_restore_values_are_hpas_ubyte(value: float) -> None:
    probabilities = np.full((3, 64, 64), value, np.float32)
    nuclei, cells = restore_both(probabilities, probabilities, Geometry((256, 256), (64, 64), False))
    expected = np.uint8(np.rint(value * 255))
    for restored in (nuclei, cells):
        assert restored.shape == (256, 256, 3)
        assert np.all(restored[..., 1:] == expected) and not restored[..., 0].any()


def test_probabilities_become_img_as_ubytes_values() -> None:
    halves = (np.arange(256, dtype=np.float32) + 0.5) / 255  # every tie of the rounding
    probabilities = np.concatenate([halves, np.linspace(0, 1, 1001), [1.0000001]]).astype(np.float32)
    geometry = Geometry((1, probabilities.size), (1, probabilities.size), False)
    restored = restore(np.repeat(probabilities[None, None], 3, axis=0), geometry, ubyte_first=True)
    np.testing.assert_array_equal(restored[0, :, 1], util.img_as_ubyte(np.clip(probabilities, 0, 1)))


def test_bit_depth_gain() -> None:
    image = eight_bit_image((256, 256))
    assert bit_depth_gain(image) == 1  # 8-bit data: untouched
    full = (image // 257).astype(np.uint16) * 256 + 255
    assert bit_depth_gain(full) == 1  # uses all 16 bits: untouched
    twelve_bit = (image // 257).astype(np.uint16) * 16  # a 12-bit camera's range
    assert bit_depth_gain(twelve_bit) == 16
    twelve_bit.flat[0] = 257 * 16  # 13 bits, its peak a multiple of 257 but not the rest
    assert bit_depth_gain(twelve_bit) == 8
    assert bit_depth_gain(np.zeros((8, 8, 4), np.uint16)) == 256


def test_sixteen_bit_data_at_a_lower_depth_looks_like_its_eight_bit_version() -> None:
    image = eight_bit_image((256, 256), seed=3)
    twelve_bit = (image // 257).astype(np.uint16) * 16
    np.testing.assert_allclose(prepare(twelve_bit).cells, prepare(image).cells, atol=2 / 255)
