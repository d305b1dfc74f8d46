"""hpasc.segmentation.labelling: HPA's label_cell rebuilt (thresholds, sizes, >255 cells, no overflow).

Equality with HPA's own code is checked by bench/label_cell.py (HPA's code is never imported here);
these tests pin HPA's numbers on hand-worked maps, each building block against the scikit-image
call HPA makes, and the whole on prediction maps drawn from known masks.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation
from skimage.morphology import closing, disk, remove_small_objects

from hpasc.segmentation import labelling
from hpasc.segmentation.labelling import label_cell
from hpasc.tools.synthetic import synthesize_image
from tests.stand_in_maps import predictions_from_masks


def blank(height: int = 300, width: int = 300) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((height, width, 3), np.uint8), np.zeros((height, width, 3), np.uint8)


def one_cell(nucleus_level: int = 255, cell_level: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """A 200x200 cell (rows/cols 50..249) around a 100x100 nucleus (100..199), borders empty."""
    nuclei_pred, cell_pred = blank()
    cell_pred[50:250, 50:250, 2] = cell_level
    nuclei_pred[100:200, 100:200, 2] = nucleus_level
    return nuclei_pred, cell_pred


def best_iou(truth: np.ndarray, found: np.ndarray) -> dict[int, float]:
    """For each object of ``truth``, its best IoU with an object of ``found``."""
    truth, found = truth.astype(np.int64).ravel(), found.astype(np.int64).ravel()
    columns = int(found.max()) + 1
    pairs = np.bincount(truth * columns + found, minlength=(int(truth.max()) + 1) * columns)
    pairs = pairs.reshape(-1, columns)
    overlap = pairs[:, 1:]
    union = pairs.sum(axis=1)[:, None] + pairs.sum(axis=0)[None, 1:] - overlap
    iou = np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)
    best = iou.max(axis=1, initial=0.0)
    return {int(t): float(best[t]) for t in np.unique(truth) if t}


def assert_nuclei_carry_cell_ids(nuclei: np.ndarray, cells: np.ndarray) -> None:
    assert nuclei.shape == cells.shape
    inside = nuclei > 0
    assert np.array_equal(nuclei[inside], cells[inside])
    assert set(np.unique(nuclei)) <= set(np.unique(cells))


# --- hand-worked maps: HPA's steps and numbers --------------------------------------------------

def test_one_cell_shrinks_by_one_pixel_per_hole_filling():
    # the nucleus floods the whole 200x200 cell mask; each of HPA's two __fill_holes keeps only
    # pixels whose four neighbours share their label, so the cell ends 196x196 at rows 52..247
    nuclei, cells = label_cell(*one_cell())
    expected = np.zeros((300, 300), np.uint16)
    expected[52:248, 52:248] = 1
    assert np.array_equal(cells, expected)
    expected_nuclei = np.zeros((300, 300), np.uint16)
    expected_nuclei[100:200, 100:200] = 1
    assert np.array_equal(nuclei, expected_nuclei)
    assert cells.dtype == nuclei.dtype == np.uint16


@pytest.mark.parametrize(("level", "found"), [(102, 0), (103, 1)])
def test_nucleus_mask_threshold_is_0_4(level, found):
    # 102/255 == 0.4 exactly, which is not > 0.4: no nucleus, hence no cell
    nuclei, cells = label_cell(*one_cell(nucleus_level=level))
    assert cells.max() == found and nuclei.max() == found


@pytest.mark.parametrize(("level", "found"), [(56, 0), (57, 1)])
def test_cell_threshold_floor_is_0_22(level, found):
    # Otsu of a two-level image splits at its first bin, so max(0.22, 0.5 * otsu) = 0.22:
    # 56/255 = 0.2196 is below it, 57/255 = 0.2235 above
    nuclei, cells = label_cell(*one_cell(cell_level=level))
    assert cells.max() == found and nuclei.max() == found
    assert labelling.cell_threshold(one_cell(cell_level=level)[1][..., 2]) == 0.22


@pytest.mark.parametrize(("border_sum", "found"), [(242, 1), (243, 0)])
def test_border_threshold_0_05_on_the_summed_borders(border_sum, found):
    # markers need 1 - (nuc[1] + cell[1]) / 255 > 0.05, i.e. a border sum up to 242
    nuclei_pred, cell_pred = one_cell()
    nuclei_pred[100:200, 100:200, 1] = border_sum // 2
    cell_pred[100:200, 100:200, 1] = border_sum - border_sum // 2
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == found


@pytest.mark.parametrize(("halo", "found"), [(38, 0), (39, 1)])
def test_marker_threshold_and_500_px_marker_size(halo, found):
    # a 60x60 nucleus cut by border lines into nine pieces under 500 px, whose markers are all
    # dropped, unless a faint halo (>= 39/255 > 0.4 - 0.25, yet below the 0.4 mask) joins the
    # eight outer pieces into one marker of more than 500 px
    nuclei_pred, cell_pred = blank()
    cell_pred[90:210, 90:210, 2] = 255
    nuclei_pred[117:183, 117:183, 2] = halo
    nuclei_pred[120:180, 120:180, 2] = 255
    for line in (140, 160):
        nuclei_pred[120:180, line, 1] = 243
        nuclei_pred[line, 120:180, 1] = 243
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == found
    if found:  # the centre piece, without a marker, is flooded from the others: one whole nucleus
        assert np.count_nonzero(nuclei) == 60 * 60


@pytest.mark.parametrize(("missing", "found"), [(0, 1), (1, 0)])
def test_nuclei_under_2500_px_are_dropped(missing, found):
    # a 50x50 nucleus (2500 px) stays; one corner pixel less (2499 px) and it goes, with its cell
    nuclei_pred, cell_pred = blank()
    cell_pred[50:250, 50:250, 2] = 255
    nuclei_pred[120:170, 120:170, 2] = 255
    nuclei_pred[120, 120, 2] = 0 if missing else 255
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == found
    assert np.count_nonzero(nuclei) == (2500 if found else 0)


@pytest.mark.parametrize(("size", "found"), [((55, 100), 1), ((39, 141), 0)])
def test_cells_under_5500_px_are_dropped(size, found):
    # the cell mask loses one pixel ring per hole filling: a (h + 4) x (w + 4) mask ends h x w,
    # 55x100 = 5500 px stays, 39x141 = 5499 px goes
    height, width = size
    nuclei_pred, cell_pred = blank()
    cell_pred[100:104 + height, 80:84 + width, 2] = 255
    nuclei_pred[105:99 + height, 85:79 + width, 2] = 255
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == found
    assert np.count_nonzero(cells) == (height * width if found else 0)


@pytest.mark.parametrize(("hole", "filled"), [((27, 37), True), ((20, 50), False)])
def test_nucleus_holes_under_1000_px_are_filled(hole, filled):
    # a 999 px hole in the nucleus mask is filled, a 1000 px one is kept (and shows in the nucleus)
    nuclei_pred, cell_pred = blank()
    cell_pred[50:250, 50:250, 2] = 255
    nuclei_pred[110:190, 110:190, 2] = 255
    nuclei_pred[130:130 + hole[0], 120:120 + hole[1], 2] = 0
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == 1
    assert np.count_nonzero(nuclei) == 80 * 80 - (0 if filled else hole[0] * hole[1])


@pytest.mark.parametrize(("green", "side"), [(12, 196), (13, 218)])
def test_cells_grow_into_the_green_border_above_0_05(green, side):
    # the second watershed floods cell_pred[..., 1] / 255 > 0.05 (13 and up) around the cell:
    # a 220x220 green square (rows 40..259) ends 218x218 after the last hole filling
    nuclei_pred, cell_pred = one_cell()
    cell_pred[40:260, 40:260, 1] = green
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == 1
    assert np.count_nonzero(cells) == side * side


def test_no_nucleus_gives_no_cell():
    nuclei_pred, cell_pred = blank()
    cell_pred[..., 2] = 255
    cell_pred[..., 1] = 100
    for maps in ((nuclei_pred, cell_pred), blank(64, 80)):
        nuclei, cells = label_cell(*maps)
        assert nuclei.shape == cells.shape == maps[0].shape[:2]
        assert not nuclei.any() and not cells.any()
        assert nuclei.dtype == cells.dtype == np.uint16


def test_border_sums_above_255_do_not_wrap():
    # two nuclei in one blob, parted by a border line with nuc[1] = cell[1] = 150: the sum 300 is
    # a border (>= 243), but HPA adds the uint8 channels, gets 300 - 256 = 44 and sees one nucleus,
    # hence one cell across both halves
    nuclei_pred, cell_pred = blank(200, 320)
    cell_pred[20:180, 20:300, 2] = 255
    cell_pred[20:180, 159:161, 2] = 0
    cell_pred[20:180, 159:161, 1] = 150
    nuclei_pred[60:140, 80:240, 2] = 255
    nuclei_pred[60:140, 159:161, 1] = 150
    nuclei, cells = label_cell(nuclei_pred, cell_pred)
    assert cells.max() == 2
    assert_nuclei_carry_cell_ids(nuclei, cells)
    left, right = cells[100, 100], cells[100, 260]
    assert {int(left), int(right)} == {1, 2}
    assert nuclei[100, 100] == left and nuclei[100, 220] == right
    assert np.count_nonzero(nuclei == left) > 6000 and np.count_nonzero(nuclei == right) > 6000


def test_rejects_bad_maps():
    nuclei_pred, cell_pred = blank(64, 64)
    with pytest.raises(ValueError, match="uint8"):
        label_cell(nuclei_pred.astype(np.float32), cell_pred)
    with pytest.raises(ValueError, match="H×W×3"):
        label_cell(nuclei_pred[..., :2], cell_pred)
    with pytest.raises(ValueError, match="shape"):
        label_cell(nuclei_pred, cell_pred[:32])


# --- building blocks against the scikit-image calls HPA makes ------------------------------------

def random_labels(rng: np.random.Generator, shape: tuple[int, int], count: int, scale: int) -> np.ndarray:
    """Blobby labels 0..count: a coarse random label grid upsampled, with background gaps."""
    coarse = rng.integers(0, count + 1, (shape[0] // scale + 1, shape[1] // scale + 1))
    labels = np.kron(coarse, np.ones((scale, scale), np.int64))[:shape[0], :shape[1]]
    labels[rng.random(shape) < 0.02] = 0
    return labels.astype(np.int32)


@pytest.mark.parametrize("seed", range(6))
def test_cell_threshold_is_hpas_otsu_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    low, high = sorted(rng.integers(0, 256, 2))
    image = rng.integers(low, high + 1, (97, 131)).astype(np.uint8)
    if seed == 0:
        image[:] = 77  # constant: threshold_otsu returns the value itself
    if seed == 1:
        image = np.where(rng.random(image.shape) < 0.3, 250, 3).astype(np.uint8)
    expected = max(0.22, filters.threshold_otsu(image / 255) * 0.5)
    assert labelling.cell_threshold(image) == expected


@pytest.mark.parametrize("seed", range(4))
def test_closing_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, (90, 123), 300 if seed < 3 else 70000, int(rng.integers(3, 12)))
    sizes = np.bincount(labels.ravel())
    expected = closing(remove_small_objects(labels, max_size=29), disk(6))
    got = labelling._close_labels(labels, 30, labelling.CLOSING_RADIUS)
    assert np.array_equal(got, expected)
    assert sizes.size < 2 ** 16 or got.dtype == np.float32


@pytest.mark.parametrize("seed", range(4))
def test_fill_holes_matches_hpas_helper(seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, (120, 95), 6, int(rng.integers(4, 15)))
    interior = labels * np.invert(segmentation.find_boundaries(labels))
    assert np.array_equal(labelling._fill_holes(labels), ndi.binary_fill_holes(interior > 0))


@pytest.mark.parametrize("seed", range(6))
def test_watershed_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    shape = (80, 113)
    image = (rng.integers(0, 6, shape) * 40).astype(np.float64)  # many ties
    mask = rng.random(shape) < 0.8
    markers = np.where(rng.random(shape) < 0.03, rng.integers(1, 9, shape), 0).astype(np.int32)
    line = bool(seed % 2)
    padded = np.pad(image, 1)
    expected = segmentation.watershed(image, markers, mask=mask, watershed_line=line)
    assert np.array_equal(labelling._watershed(padded, markers, mask, line), expected)


@pytest.mark.parametrize(("connectivity", "size"), [(4, 8), (4, 500), (8, 2500)])
def test_small_object_removal_is_strictly_below_the_size(connectivity, size):
    # remove_small_objects(x, N) removed objects under N px (scikit-image 0.26.0's shim for the
    # deprecated argument removes N px too: HPA's numbers are "under N")
    rng = np.random.default_rng(size)
    binary = ndi.binary_opening(rng.random((300, 300)) < 0.55)
    binary[:, 200:] = False
    binary[10:10 + size // 50 + 1, 210:260].flat[:size] = True  # exactly size px
    binary[150:150 + size // 50 + 1, 210:260].flat[:size - 1] = True  # one px less
    expected = remove_small_objects(binary, max_size=size - 1, connectivity=connectivity // 4)
    got = labelling._drop_small(binary, connectivity, size)
    assert np.array_equal(got, expected)
    assert got[10, 210] and not got[150, 210]


@pytest.mark.parametrize("seed", range(5))
def test_relabelling_matches_measure_label(seed):
    rng = np.random.default_rng(seed)
    binary = ndi.binary_opening(rng.random((150, 170)) < 0.6 - 0.03 * seed)
    labels, count = labelling._keep_components(binary, 8, 20)
    expected = measure.label(remove_small_objects(measure.label(binary), max_size=19))
    assert np.array_equal(labels, expected)
    assert count == expected.max()


# --- whole pipeline on maps drawn from known masks ----------------------------------------------

@pytest.fixture(scope="module")
def synthetic_case():
    image = synthesize_image((2048, 2048), np.random.default_rng(3))
    maps = predictions_from_masks(image.cells, image.nuclei, np.random.default_rng(4))
    return image, maps, label_cell(*maps)


def test_prediction_maps_follow_hpas_convention(synthetic_case):
    image, (nuclei_pred, cell_pred), _ = synthetic_case
    for pred, truth in ((nuclei_pred, image.nuclei), (cell_pred, image.cells)):
        assert pred.dtype == np.uint8 and pred.shape == truth.shape + (3,)
        assert not pred[..., 0].any()
        assert pred[..., 2][truth > 0].mean() > 150 > pred[..., 2][truth == 0].mean()
        assert pred[..., 1][truth == 0].mean() < 30


def test_recovers_the_known_cells(synthetic_case):
    image, _, (nuclei, cells) = synthetic_case
    assert cells.dtype == nuclei.dtype == np.uint16
    matches = best_iou(image.cells, cells)
    matched = sum(iou >= 0.6 for iou in matches.values())
    assert matched >= 0.8 * len(matches), matches
    assert cells.max() <= len(matches) + 2
    assert_nuclei_carry_cell_ids(nuclei, cells)
    # most found cells hold a nucleus, and each found nucleus overlaps a true one
    assert len(np.unique(nuclei)) - 1 >= 0.8 * cells.max()
    assert np.mean(image.nuclei[nuclei > 0] > 0) > 0.9


def test_more_than_255_cells_keep_distinct_labels():
    # 18 x 18 touching 104 px cells, each around a 36 px-radius nucleus: 324 cells, which HPA's
    # uint8 cast of the labels folds onto each other (label 256 even turns into background)
    tile, grid = 104, 18
    yy, xx = np.mgrid[:tile, :tile] - (tile - 1) / 2
    disc = (yy ** 2 + xx ** 2) <= 36 ** 2
    ids = np.arange(1, grid * grid + 1, dtype=np.uint16).reshape(grid, grid)
    cells = np.kron(ids, np.ones((tile, tile), np.uint16))
    nuclei = cells * np.tile(disc, (grid, grid))
    maps = predictions_from_masks(cells, nuclei, np.random.default_rng(0))
    found_nuclei, found_cells = label_cell(*maps)
    assert found_cells.dtype == np.uint16
    assert found_cells.max() == grid * grid
    assert len(np.unique(found_cells)) == grid * grid + 1
    matches = best_iou(cells, found_cells)
    assert min(matches.values()) >= 0.6
    assert_nuclei_carry_cell_ids(found_nuclei, found_cells)
    assert len(np.unique(found_nuclei)) == grid * grid + 1
