"""Seconds per image of infer.py, by stage and in total, on the real 2048² HPA samples.

Input: the four images of tests/data/hpa_samples (each used --copies times under new IDs) and an
ensemble of --members randomly initialised EfficientNet-B0 checkpoints at --tile-size (weights do
not change the cost). Stages, timed one image at a time in this process, in wall seconds and in
CPU core-seconds (all threads of the process): reading the four PNGs, HPA's network input
(prepare), the network maps brought back to full size (restore), label_cell exactly and at
--label-scale, cutting the cells (tiles, border and outlier factors), RLE-encoding the masks
and the cells' centroids,
scoring the tiles with the ensemble (CUDA when available: float16 autocast, channels-last),
post-processing and the prediction string. HPA's networks are stood in for by maps made from
each image's classical masks (their weights cannot be downloaded offline; bench/segmentation.py
and bench/gpu/ time them). Then the CPU per image without any network, for both label_cell
modes, with each stage's share. Total: infer.py's pipelined run (``infer_folder``, classical
segmentation) with --workers processes.

The anchor: the 4th place needed about 6 of Kaggle's 9 hours for 559 test images (~39 s/image on
a P100 with 2 CPU cores); the target for one modern GPU with 16 cores, 7 checkpoints at 512 px
and HPA segmentation is <= 2 s/image, and the CPU work around the networks <= 0.6 core-s per image
at --label-scale 0.25 (<= 1.2 exact).

Usage: python bench/infer.py [--members 7] [--tile-size 512] [--copies 1] [--workers 2] [--label-scale 0.25]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from hpasc.commands import cli  # noqa: E402
from hpasc.core import runtime  # noqa: E402
from hpasc.cells.cut import cut_image  # noqa: E402
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.core.images import CHANNELS  # noqa: E402
from hpasc.stages.infer.ensemble import LoadedEnsemble  # noqa: E402
from hpasc.stages.infer.ensemble_file import WeightingSettings, read_ensemble  # noqa: E402
from hpasc.stages.infer.weighting import weight_scores  # noqa: E402
from hpasc.stages.infer.jobs import describe_cells  # noqa: E402
from hpasc.stages.infer.settings import InferSettings  # noqa: E402
from hpasc.stages.infer.stage import infer_folder  # noqa: E402
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from hpasc.models.registry import create_model  # noqa: E402
from hpasc.cells.tile_spec import TileSpec  # noqa: E402
from hpasc.models.spec import ModelSpec  # noqa: E402
from hpasc.segmentation.rescaled import label_cell_at_scale  # noqa: E402
from hpasc.segmentation.settings import SegmentationSettings  # noqa: E402
from hpasc.segmentation.scaling import prepare, restore_both  # noqa: E402
from hpasc.submission.rows import prediction_string  # noqa: E402
from segmentation import stand_in_output  # noqa: E402  (bench/segmentation.py)

REAL = HERE.parent / "tests" / "data" / "hpa_samples"


def make_ensemble(root: Path, members: int, tile_size: int) -> Path:
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(tile_size))
    lines = ["groups:", "  - members:"]
    for number in range(members):
        torch.manual_seed(number)
        model = create_model("efficientnet-b0", 18, tile_size=tile_size).eval()
        save_checkpoint(root / f"m{number}.pt", make_checkpoint(model, spec, 1, [], {}))
        lines.append(f"      - m{number}.pt")
    (root / "ensemble.yaml").write_text("\n".join(lines) + "\n")
    return root / "ensemble.yaml"


def copy_images(root: Path, copies: int) -> Path:
    images = root / "images"
    images.mkdir()
    for source in scan_images(REAL / "images").ids:
        for copy in range(copies):
            for channel in CHANNELS:
                shutil.copy(REAL / "images" / f"{source}_{channel}.png",
                            images / f"{source}-{copy}_{channel}.png")
    return images


STAGES = ("read", "prepare (HPA's network input)", "restore (network maps)", "label_cell, exact",
          "label_cell, scaled", "cut cells", "RLE, centroids", "post-process", "score (ensemble)")
NETWORK = "score (ensemble)"


class StageClock:
    """Wall and CPU seconds (all of this process's threads: core-seconds) per stage."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self._restart()

    def _restart(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def skip(self) -> None:
        """Leave the time since the last lap out (work the bench does, not the pipeline)."""
        self._restart()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[name] += wall - self._wall
        self.cpu[name] += cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def stage_times(images: Path, ensemble: LoadedEnsemble, settings: InferSettings, label_scale: float) -> StageClock:
    """Seconds of each stage summed over the images, one image after another in this process.

    The HPA backend's networks are stood in for by maps made from each image's classical
    segmentation (made outside the clock), so that ``label_cell`` has a realistic amount of work.
    """
    folder = scan_images(images)
    clock = StageClock()
    for image_id in folder.ids:
        clock.skip()
        image = folder.read(image_id)
        clock.lap("read")
        prepared = prepare(image)
        clock.lap("prepare (HPA's network input)")
        outputs = stand_in_output(image, prepared.cells.shape[1:])
        clock.skip()
        maps = restore_both(*outputs, prepared.geometry)
        clock.lap("restore (network maps)")
        nuclei, cells = label_cell_at_scale(*maps, 1)
        clock.lap("label_cell, exact")
        label_cell_at_scale(*maps, label_scale)
        clock.lap("label_cell, scaled")
        tiles, rows = cut_image(image, cells, nuclei, image_id, [], ensemble.tile_specs[0])
        clock.lap("cut cells")
        rows, masks = describe_cells(cells, rows)
        clock.lap("RLE, centroids")
        scores = [ensemble(torch.from_numpy(tiles[i:i + settings.batch_size]))
                  for i in range(0, len(tiles), settings.batch_size)]
        clock.lap(NETWORK)
        combined = weight_scores(np.concatenate([np.zeros((0, 19)), *scores]), rows["border"].to_numpy(),
                               rows["outlier"].to_numpy(), WeightingSettings())
        prediction_string(masks, combined)
        clock.lap("post-process")
    return clock


def print_stages(clock: StageClock, count: int, label_scale: float) -> None:
    """The table of stages, and the CPU budget per image without the networks, each stage's share."""
    print(f"  {'stage':<32} {'wall s':>7} {'CPU core-s':>10}")
    for name in STAGES:
        print(f"  {name:<32} {clock.wall[name] / count:7.3f} {clock.cpu[name] / count:10.3f}")
    for mode, left_out in ((f"label-scale {label_scale:g}", "label_cell, exact"),
                           ("exact", "label_cell, scaled")):
        stages = [name for name in STAGES if name not in (NETWORK, left_out)]
        total = sum(clock.cpu[name] for name in stages)
        shares = ", ".join(f"{name.split(' (')[0]} {clock.cpu[name] / total:.0%}" for name in stages)
        print(f"CPU per image without the networks, {mode}: {total / count:.3f} core-s ({shares})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=cli.positive_int, default=7, help="checkpoints in the ensemble")
    parser.add_argument("--tile-size", type=cli.positive_int, default=512, help="the models' tile size")
    parser.add_argument("--copies", type=cli.positive_int, default=1, help="copies of each real image")
    parser.add_argument("--workers", type=cli.positive_int, default=2, help="worker processes of the run")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=32, help="tiles per batch")
    parser.add_argument("--label-scale", type=float, default=0.25, help="the scaled label_cell's scale")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = InferSettings(SegmentationSettings("classical"), batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ensemble_file = make_ensemble(root, args.members, args.tile_size)
        images = copy_images(root, args.copies)
        count = len(scan_images(images).ids)
        loaded = LoadedEnsemble(read_ensemble(ensemble_file), device)
        clock = stage_times(images, loaded, settings, args.label_scale)
        options = runtime.CommonOptions(workers=args.workers, device=device.type, progress=False)
        start = time.perf_counter()
        failed = infer_folder(scan_images(images), ensemble_file, root / "submission.csv", None, settings, options)
        total = (time.perf_counter() - start) / count
        assert not failed, failed
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"{count} images of 2048², {args.members} x B0 at {args.tile_size} px, {where}")
    print_stages(clock, count, args.label_scale)
    print(f"infer_folder, classical segmentation, {args.workers} workers: {total:.2f} s/image "
          "(pipelined, incl. model loading)")


if __name__ == "__main__":
    main()
