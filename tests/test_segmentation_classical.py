"""Tests of the classical segmentation backend: agreement with HPA's own masks on the real samples,
the label invariants, odd image sizes, dark images, bit-depth invariance and synthetic truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hpasc.core import images
from hpasc.core.image_folder import scan_images
from hpasc.segmentation.classical import segment_classical
from hpasc.submission.matching import match_instances
from hpasc.tools import synthetic

# The targets are mean >= 0.90 and each >= 0.80 (measured: 1.0, 1.0, 0.89, 0.90); the tests hold a
# looser mean so that they do not fail on a one-cell change.
MIN_REAL_F1 = 0.80
MIN_REAL_MEAN_F1 = 0.85


@pytest.fixture(scope="module")
def real(hpa_real: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ID -> (image, HPA's cell mask) of the real samples."""
    folder = scan_images(hpa_real / "images")
    assert len(folder.ids) == 4, folder.ids
    return {i: (folder.read(i), images.read_label_image(hpa_real / "masks" / f"{i}_cellmask.png"))
            for i in folder.ids}


@pytest.fixture(scope="module")
def real_segmented(real) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {i: segment_classical(image) for i, (image, _) in real.items()}


def synth(size: tuple[int, int], seed: int) -> synthetic.SyntheticImage:
    return synthetic.synthesize_image(size, np.random.default_rng(seed))


def check_invariants(nuclei: np.ndarray, cells: np.ndarray, shape: tuple[int, int]) -> int:
    """Assert the output contract; return the number of cells."""
    assert nuclei.dtype == np.uint16 and cells.dtype == np.uint16
    assert nuclei.shape == cells.shape == shape
    if cells.size == 0:
        return 0
    count = int(cells.max())
    cell_ids = np.unique(cells)
    assert set(cell_ids.tolist()) - {0} == set(range(1, count + 1))  # ids 1..n, no gaps
    # Every cell has a nucleus, every nucleus carries the id of the cell it lies in.
    assert np.unique(nuclei).tolist() == cell_ids.tolist()
    inside = nuclei > 0
    assert np.array_equal(cells[inside], nuclei[inside])
    return count


def test_agrees_with_hpa_segmentation(real, real_segmented):
    scores = {i: match_instances(mask, real_segmented[i][1]).f1 for i, (_, mask) in real.items()}
    assert min(scores.values()) >= MIN_REAL_F1, scores
    assert np.mean(list(scores.values())) >= MIN_REAL_MEAN_F1, scores


def test_real_output_invariants(real, real_segmented):
    for image_id, (nuclei, cells) in real_segmented.items():
        count = check_invariants(nuclei, cells, real[image_id][0].shape[:2])
        assert count > 0


def test_eight_and_sixteen_bit_ranges_agree(real, real_segmented):
    # The samples are 8-bit ×257; the same data in the 0..255 range must segment the same.
    image_id = sorted(real)[0]
    nuclei, cells = segment_classical(real[image_id][0] // 257)
    reference_nuclei, reference_cells = real_segmented[image_id]
    assert match_instances(reference_cells, cells).f1 == 1.0
    assert np.mean(cells == reference_cells) > 0.999
    assert np.mean(nuclei == reference_nuclei) > 0.999


@pytest.mark.parametrize("side", [1728, 3072])
def test_other_hpa_image_sizes(real, side):
    # HPA's 1728² and 3072² images show the same field as the 2048² ones: sizes must scale.
    image_id = sorted(real)[-1]
    image, mask = real[image_id]
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if side < 2048 else cv2.INTER_LINEAR)
    mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST)
    nuclei, cells = segment_classical(image)
    check_invariants(nuclei, cells, (side, side))
    assert match_instances(mask, cells).f1 >= MIN_REAL_F1


def test_synthetic_images_match_truth():
    scores = []
    for seed in range(4):
        drawn = synth((1024, 1024), seed)
        nuclei, cells = segment_classical(drawn.image)
        check_invariants(nuclei, cells, (1024, 1024))
        scores.append(match_instances(drawn.cells, cells).f1)
        assert match_instances(drawn.nuclei, nuclei, iou_threshold=0.5).f1 >= 0.8
    assert min(scores) >= 0.9 and np.mean(scores) >= 0.95, scores


@pytest.mark.parametrize("size", [(300, 500), (500, 300), (128, 900)])
def test_non_square_and_small_images(size):
    drawn = synth(size, 7)
    nuclei, cells = segment_classical(drawn.image)
    assert check_invariants(nuclei, cells, size) > 0
    assert match_instances(drawn.cells, cells).f1 >= 0.8


def test_synthetic_bit_depth_and_exposure_invariance():
    drawn = synth((512, 640), 3)
    reference = segment_classical(drawn.image)[1]
    # 8-bit quantisation of the same picture, and a dimmer exposure with a camera offset.
    eight_bit = (drawn.image.astype(np.float64) / 257).round().astype(np.uint16)
    dimmer = (drawn.image.astype(np.float64) * 0.3 + 100).astype(np.uint16)
    for variant in (eight_bit, dimmer):
        cells = segment_classical(variant)[1]
        result = match_instances(reference, cells)
        assert result.f1 == 1.0
        assert min(iou for _, _, iou in result.pairs) > 0.9


@pytest.mark.parametrize("kind", ["zeros", "constant", "camera noise", "8-bit noise", "dim noise"])
def test_dark_images_have_no_cells(kind):
    rng = np.random.default_rng(1)
    shape = (400, 600, 4)
    image = {
        "zeros": lambda: np.zeros(shape, np.uint16),
        "constant": lambda: np.full(shape, 1000, np.uint16),
        "camera noise": lambda: rng.normal(500, 20, shape).astype(np.uint16),
        "8-bit noise": lambda: rng.poisson(2, shape).astype(np.uint16) * 257,
        "dim noise": lambda: rng.poisson(0.2, shape).astype(np.uint16),
    }[kind]()
    nuclei, cells = segment_classical(image)
    assert check_invariants(nuclei, cells, shape[:2]) == 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (1, 100), (0, 7)])
def test_degenerate_sizes_do_not_crash(shape):
    image = np.random.default_rng(2).integers(0, 65535, (*shape, 4)).astype(np.uint16)
    nuclei, cells = segment_classical(image)
    check_invariants(nuclei, cells, shape)


def test_rejects_a_non_four_channel_image():
    with pytest.raises(ValueError, match="H×W×4"):
        segment_classical(np.zeros((10, 10, 3), np.uint16))
