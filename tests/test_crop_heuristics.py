"""Cell tiles and the 4th place's border/outlier factors on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from hpasc.cells.crop import Box, cell_areas, cell_boxes, cell_centroids, crop_cell, crop_cells, pad_to_square
from hpasc.cells.factors import border_factors, channel_sums, keep_for_training, outlier_factors
from hpasc.cells.thresholds import Thresholds
from hpasc.cells.tile_spec import TileSpec

THEIRS = Thresholds()  # the 4th place's numbers
CUT, NO_NUCLEUS, OUTLIER = THEIRS.cut, THEIRS.no_nucleus, THEIRS.outlier


def ramp_image(height: int = 64, width: int = 80) -> np.ndarray:
    """Distinct 16-bit values everywhere (values above 255 × 257 included)."""
    values = np.arange(height * width * 4, dtype=np.uint32).reshape(height, width, 4)
    return (values * 13 % 65536).astype(np.uint16)


def test_boxes_and_ids() -> None:
    cells = np.zeros((10, 12), np.uint16)
    cells[1:4, 2:7] = 1
    cells[5:9, 0:3] = 3  # id 2 absent
    assert cell_boxes(cells) == {1: Box(1, 2, 4, 7), 3: Box(5, 0, 9, 3)}


def test_centroids_and_areas_are_the_whole_image_figures() -> None:
    cells = np.random.default_rng(0).integers(0, 5, (40, 50)).astype(np.uint16)
    cells[30:, 40:] = 7  # a cell whose box holds others' pixels too
    boxes = cell_boxes(cells)
    ids = sorted(boxes)
    expected = ndi.center_of_mass(cells > 0, cells, ids)
    np.testing.assert_allclose(cell_centroids(cells, boxes, ids), expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(cell_areas(cells, boxes, ids), np.bincount(cells.ravel())[ids])


def test_tile_is_the_masked_padded_crop_when_no_resize_happens() -> None:
    image = ramp_image()
    cells = np.zeros((64, 80), np.uint16)
    cells[10:30, 20:36] = 2  # 20 x 16 box, padded to 20 x 20 = the tile size
    cells[12:15, 22:25] = 5  # another cell inside the box: zeroed in cell 2's tile
    tile = crop_cell(image, cells, 2, Box(10, 20, 30, 36), TileSpec(size=20))

    expected = np.zeros((20, 20, 4), np.uint16)
    expected[:, 2:18] = np.where((cells[10:30, 20:36] == 2)[..., None], image[10:30, 20:36], 0)
    assert tile.dtype == np.uint16 and tile.shape == (4, 20, 20)
    np.testing.assert_array_equal(tile, expected.transpose(2, 0, 1))
    assert (tile % 257).any() and tile.max() > 255  # 16-bit precision survives


def test_pad_keeps_aspect_ratio_and_centres() -> None:
    padded = pad_to_square(np.ones((3, 8, 1), np.uint16))
    assert padded.shape == (8, 8, 1)
    np.testing.assert_array_equal(padded[:, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0])


def test_resize_mode_stretches_and_sizes() -> None:
    image = np.full((64, 80, 4), 1000, np.uint16)
    cells = np.zeros((64, 80), np.uint16)
    cells[0:10, 0:40] = 1
    ids, boxes, tiles = crop_cells(image, cells, TileSpec(size=26, mode="resize"))
    assert ids == [1] and tiles.shape == (1, 4, 26, 26)
    assert (tiles == 1000).all()  # stretched: no padding rows
    _, _, padded = crop_cells(image, cells, TileSpec(size=26))
    assert (padded[0, :, 0] == 0).all() and (padded[0, :, 13] == 1000).all()


def test_context_keeps_surroundings() -> None:
    image = np.full((40, 40, 4), 7, np.uint16)
    cells = np.zeros((40, 40), np.uint16)
    cells[15:25, 15:25] = 1
    plain = crop_cell(image, cells, 1, Box(15, 15, 25, 25), TileSpec(size=10))
    context = crop_cell(image, cells, 1, Box(15, 15, 25, 25), TileSpec(size=20, context=5))
    assert (plain == 7).all()  # the box is all cell
    assert context[0, 10, 0] == 7 and context[0, 10, 10] == 7  # 5 px left of the cell kept
    assert context[0, 0, 0] == 0  # the corner is farther than 5 px: zeroed


def round_nucleus(size: int, centre: tuple[int, int], radius: int, mask_id: int,
                  labels: np.ndarray) -> None:
    yy, xx = np.ogrid[:size, :size]
    labels[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = mask_id


def test_border_factor() -> None:
    nuclei = np.zeros((100, 100), np.uint16)
    round_nucleus(100, (50, 50), 10, 1, nuclei)  # whole, round: clean
    round_nucleus(100, (50, 0), 10, 2, nuclei)  # cut through its centre by the left border
    nuclei[80:90, 70:80] = 3  # a square: full edges in both directions
    blue = np.full((100, 100), 500, np.uint16)
    blue[nuclei == 3] = 0  # no blue signal
    factors = border_factors(nuclei, blue, [1, 2, 3, 4], THEIRS)  # 4: no nucleus at all
    assert factors[0] == 1.0
    assert factors[1] == pytest.approx(CUT)  # columns: r = 0; rows of a round cap: r > 0.3
    assert factors[2] == NO_NUCLEUS and factors[3] == NO_NUCLEUS


def test_border_factor_graded_range() -> None:
    nuclei = np.zeros((60, 60), np.uint16)
    nuclei[10:30, 10:30] = 1
    nuclei[10, 10:28] = 0  # top row: 2 of 20 filled; bottom row full -> r = 0 across
    nuclei[10:30, 10] = 0
    nuclei[15:19, 10] = 1  # left column 4 of 20 filled; right column full -> r = 0 down
    nuclei[10:30, 29] = 0
    nuclei[10:25, 29] = 1  # right column 15 of 20 -> max(4, 15): r = 5/20 = 0.25 down
    nuclei[29, 10:30] = 0
    nuclei[29, 10:25] = 1  # bottom row 15 of 20 -> max(2, 15): r = 0.25 across
    factor = border_factors(nuclei, np.ones((60, 60), np.uint16), [1], THEIRS)[0]
    assert factor == pytest.approx(((0.25 * 3.33) ** 0.1) ** 2)


def test_outlier_factor() -> None:
    cells = np.zeros((20, 40), np.uint16)
    image = np.zeros((20, 40, 4), np.uint16)
    for mask_id in range(1, 5):
        cells[:, (mask_id - 1) * 10:mask_id * 10] = mask_id
        image[cells == mask_id] = 30000
    image[cells == 2, 0] = 1000  # faint red: < 0.077 x the mean
    image[cells == 3, 3] = 100  # faint yellow: blue x yellow < 0.05 x the mean
    border = np.array([1.0, 1.0, 1.0, NO_NUCLEUS])  # cell 4 is no candidate: untouched
    factors = outlier_factors(cells, image, [1, 2, 3, 4], border, THEIRS)
    np.testing.assert_array_equal(factors, [1.0, OUTLIER, OUTLIER, 1.0])
    none = outlier_factors(cells, image, [1, 2], np.array([CUT, NO_NUCLEUS]), THEIRS)
    np.testing.assert_array_equal(none, [1.0, 1.0])


def test_keep_for_training() -> None:
    border, outlier = np.array([1.0, 0.9, 1.0]), np.array([1.0, 1.0, OUTLIER])
    np.testing.assert_array_equal(keep_for_training(border, outlier, [0, 5]), [True, False, False])
    np.testing.assert_array_equal(keep_for_training(border, outlier, [11]), [True, True, True])


def test_channel_sums_equal_a_full_image_count() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((120, 90), np.uint16)
    for mask_id in range(1, 8):
        y, x = rng.integers(0, 100), rng.integers(0, 70)
        labels[y:y + rng.integers(3, 20), x:x + rng.integers(3, 20)] = mask_id
    planes = rng.integers(0, 65536, size=(120, 90, 4), dtype=np.uint16)
    ids = [i for i in range(1, 9) if (labels == i).any()] + [9]  # 9: absent
    expected = np.stack([np.bincount(labels.ravel(), weights=planes[..., c].ravel(), minlength=10)[ids]
                         for c in range(4)], axis=1) / 65535
    np.testing.assert_allclose(channel_sums(labels, planes, ids), expected, rtol=1e-12)
