"""Time hpasc.segmentation.labelling.label_cell on 2048² prediction maps (one core), and, when
HPA's hpacellseg.utils is importable, time HPA's label_cell on the same maps and check that both
give the same labels.

Inputs: prediction maps built from synthetic masks (hpasc.tools.synthetic), with the real HPA samples
present from the four real cell masks of tests/data/hpa_samples (nuclei: the Otsu-bright part of
the blue channel inside each cell, smoothed by --nucleus-smoothing px first), and from a grid of
361 cells (more than HPA's uint8 labels hold). HPA's code is looked for on sys.path, then under
--hpa-path DIR or $HPA_CELLSEG_PATH (a folder holding the hpacellseg package: a checkout, or a copy
of its utils.py). HPA's output is only
expected to agree where its uint8 bugs cannot bite: fewer than 256 nuclei, and no pixel where
nuclei_pred[..., 1] + cell_pred[..., 1] wraps past 255 to flip a nucleus-marker pixel. Inputs
outside that are timed but marked "n/a" for agreement. On scikit-image 0.26.0, HPA's code needs
its remove_small_objects(x, N) / remove_small_holes(x, 1000) calls rewritten as max_size=N - 1 /
max_size=999 to keep its "under N px" sizes (see hpasc/segmentation/labelling.py).

With --label-scale S (default 0.25) also the scaled path (hpasc.segmentation.rescaled) on the same
maps, side by side: its time, its speed-up over our full-scale label_cell, and its F1 against the
full-scale cells (matched at IoU >= 0.6), per input and pooled over all.

Usage: python bench/label_cell.py [--images 5] [--repeats 1] [--hpa-path DIR] [--no-real] [--label-scale S]
                                  [--nucleus-smoothing PX]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hpasc.tools import synthetic  # noqa: E402
from hpasc.commands import cli  # noqa: E402
from hpasc.core import images  # noqa: E402
from hpasc.segmentation import labelling  # noqa: E402
from hpasc.segmentation.rescaled import label_cell_at_scale  # noqa: E402
from hpasc.submission.matching import match_instances  # noqa: E402
from tests.stand_in_maps import nuclei_from_blue, predictions_from_masks  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "hpa_samples"
SIZE = 2048


def load_hpa(path: str | None):
    """HPA's ``label_cell``, or None with the reason."""
    if path:
        sys.path.insert(0, str(Path(path).resolve()))
    try:
        return importlib.import_module("hpacellseg.utils").label_cell, None
    except ImportError as error:
        return None, str(error)


def synthetic_inputs(count: int):
    for index in range(count):
        image = synthetic.synthesize_image((SIZE, SIZE), np.random.default_rng([7, index]))
        maps = predictions_from_masks(image.cells, image.nuclei,
                                                  np.random.default_rng([7, index, 1]))
        yield f"synthetic {index}", contiguous(maps)


def real_inputs(smoothing: float):
    for mask_path in sorted((REAL / "masks").glob("*_cellmask.png")):
        image_id = mask_path.name.removesuffix("_cellmask.png")
        cells = images.read_label_image(mask_path).astype(np.int32)
        blue = cv2.imread(str(REAL / "images" / f"{image_id}_blue.png"), cv2.IMREAD_GRAYSCALE)
        if cells.shape != (SIZE, SIZE) or blue is None:
            continue
        maps = predictions_from_masks(cells, nuclei_from_blue(cells, blue, smoothing),
                                      np.random.default_rng(len(image_id)))
        yield f"real {image_id[:8]}", contiguous(maps)


def tiled_input():
    """19 x 19 touching 107 px cells around 38 px-radius nuclei: 361 cells, past HPA's uint8 labels."""
    tile, grid = 107, 19
    yy, xx = np.mgrid[:tile, :tile] - (tile - 1) / 2
    disc = (yy ** 2 + xx ** 2) <= 38 ** 2
    ids = np.arange(1, grid * grid + 1, dtype=np.int32).reshape(grid, grid)
    cells = np.zeros((SIZE, SIZE), np.int32)
    cells[:tile * grid, :tile * grid] = np.kron(ids, np.ones((tile, tile), np.int32))
    nuclei = np.zeros_like(cells)
    nuclei[:tile * grid, :tile * grid] = cells[:tile * grid, :tile * grid] * np.tile(disc, (grid, grid))
    return f"tiled {grid * grid}", contiguous(predictions_from_masks(cells, nuclei, np.random.default_rng(0)))


def contiguous(maps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """H×W×3 in memory order, as the segmentator's restored network maps are."""
    return tuple(np.ascontiguousarray(m) for m in maps)


def scaled_run(nuclei_pred: np.ndarray, cell_pred: np.ndarray, full_cells: np.ndarray, scale: float,
               repeats: int) -> tuple[float, int, int]:
    """(best seconds of the scaled path, 2 × cells matched to the full-scale ones, cells in both)."""
    seconds = float("inf")
    for _ in range(repeats):
        (_, cells), elapsed = run_timed(label_cell_at_scale, nuclei_pred, cell_pred, scale)
        seconds = min(seconds, elapsed)
    matched = len(match_instances(full_cells, cells, 0.6).pairs)
    return seconds, 2 * matched, int(full_cells.max()) + len(np.unique(cells[cells > 0]))


def hpa_safe(nuclei_pred: np.ndarray, cell_pred: np.ndarray, nuclei_count: int) -> bool:
    """Whether HPA's uint8 wrap-arounds leave its result unchanged on these maps."""
    total = nuclei_pred[..., 1].astype(np.int32) + cell_pred[..., 1]
    # a wrapped sum in 256..498 reads as "no border" where the true sum is a border
    flipped = (total >= 256) & (total <= 498) & (nuclei_pred[..., 2] / 255 > 0.4 - 0.25)
    return nuclei_count <= 255 and not flipped.any()


def run_timed(function, *args) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=cli.positive_int, default=5, help="synthetic images")
    parser.add_argument("--repeats", type=cli.positive_int, default=1, help="runs per input (best kept)")
    parser.add_argument("--hpa-path", default=os.environ.get("HPA_CELLSEG_PATH"),
                        help="folder holding HPA's hpacellseg package (default: $HPA_CELLSEG_PATH)")
    parser.add_argument("--no-real", action="store_true", help="skip the real-mask inputs")
    parser.add_argument("--nucleus-smoothing", type=float, default=2.0,
                        help="px of Gaussian smoothing of a real sample's blue channel before its nuclei are "
                             "thresholded (0: the raw Otsu threshold, hundreds of specks)")
    parser.add_argument("--label-scale", type=float, default=0.25, help="scale of the scaled path (1: skip it)")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as HPA's figure
    hpa_label_cell, why = load_hpa(args.hpa_path)
    if hpa_label_cell is None:
        print(f"HPA's hpacellseg.utils not importable ({why}): timing ours only")
    inputs = list(synthetic_inputs(args.images))
    if not args.no_real and (REAL / "masks").is_dir():
        inputs += list(real_inputs(args.nucleus_smoothing))
    inputs.append(tiled_input())
    labelling.label_cell(*inputs[0][1])  # warm-up

    print(f"{SIZE}x{SIZE} prediction maps, 1 thread, best of {args.repeats}")
    header = f"{'input':18s} {'cells':>5s} {'ours s':>8s}"
    if args.label_scale != 1:
        header += f" {'S=' + format(args.label_scale, 'g') + ' s':>9s} {'faster':>7s} {'F1':>6s}"
    scaled_seconds, pooled = 0.0, np.zeros(2, int)
    print(header + (f" {'HPA s':>8s} {'speed-up':>8s}  identical" if hpa_label_cell else ""))
    ours_total = theirs_total = 0.0
    same = comparable = 0
    for name, (nuclei_pred, cell_pred) in inputs:
        ours = theirs = float("inf")
        for _ in range(args.repeats):  # alternate, so that a busy spell of the machine hits both
            (nuclei, cells), seconds = run_timed(labelling.label_cell, nuclei_pred, cell_pred)
            ours = min(ours, seconds)
            if hpa_label_cell is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    (their_nuclei, their_cells), seconds = run_timed(hpa_label_cell, nuclei_pred, cell_pred)
                theirs = min(theirs, seconds)
        ours_total += ours
        line = f"{name:18s} {int(cells.max()):5d} {ours:8.3f}"
        if args.label_scale != 1:
            seconds, matched, total = scaled_run(nuclei_pred, cell_pred, cells, args.label_scale, args.repeats)
            scaled_seconds += seconds
            pooled += (matched, total)
            line += f" {seconds:9.3f} {ours / seconds:6.1f}x {matched / max(total, 1):6.3f}"
        if hpa_label_cell is not None:
            theirs_total += theirs
            identical = np.array_equal(nuclei, their_nuclei) and np.array_equal(cells, their_cells)
            count = int(labelling._label_nuclei(np.ascontiguousarray(nuclei_pred[..., 1]),
                                                  np.ascontiguousarray(nuclei_pred[..., 2]),
                                                  np.ascontiguousarray(cell_pred[..., 1])).max())
            if hpa_safe(nuclei_pred, cell_pred, count):
                comparable += 1
                same += identical
                verdict = "yes" if identical else "NO"
            else:
                found = f"differs: HPA finds {int(their_cells.max())} cells"
                verdict = f"n/a (HPA's uint8 bugs apply; {'same' if identical else found})"
            line += f" {theirs:8.3f} {theirs / ours:7.1f}x  {verdict}"
        print(line, flush=True)
    count = len(inputs)
    summary = f"{'mean':18s} {'':5s} {ours_total / count:8.3f}"
    if args.label_scale != 1:
        summary += (f" {scaled_seconds / count:9.3f} {ours_total / scaled_seconds:6.1f}x "
                    f"{pooled[0] / max(pooled[1], 1):6.3f} (pooled F1)")
    if hpa_label_cell is not None:
        summary += (f" {theirs_total / count:8.3f} {theirs_total / ours_total:7.1f}x  "
                    f"identical on {same} of {comparable} comparable inputs")
    print(summary)


if __name__ == "__main__":
    main()
