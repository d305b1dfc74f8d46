"""Seconds per image of infer.py, by stage and in total, on the real 2048² HPA samples.

Input: the four images of ../shared/data/hpa_real (each used --copies times under new IDs) and an
ensemble of --members randomly initialised EfficientNet-B0 checkpoints at --tile-size (weights do
not change the cost). Stages, timed one image at a time in this process: reading the four PNGs,
the classical segmentation, cutting the cells (tiles, border and outlier factors), RLE-encoding
the masks, scoring the tiles with the ensemble (CUDA when available: float16 autocast,
channels-last), post-processing and the prediction string. Total: infer.py's pipelined run
(``infer_folder``) with --workers processes. HPA's networks are not timed here (their weights
cannot be downloaded offline; bench/segmentation.py times them).

The anchor: the 4th place needed about 6 of Kaggle's 9 hours for 559 test images (~39 s/image on
a P100 with 2 CPU cores); the target for one modern GPU with 16 cores, 7 checkpoints at 512 px
and HPA segmentation is <= 2 s/image.

Usage: python bench/infer.py [--members 7] [--tile-size 512] [--copies 1] [--workers 2]
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
from hpasc import cli, runtime  # noqa: E402
from hpasc.cells.cutter import cut_image  # noqa: E402
from hpasc.image_folder import scan_images  # noqa: E402
from hpasc.images import CHANNELS  # noqa: E402
from hpasc.inference.ensemble import LoadedEnsemble
from hpasc.inference.ensemble_file import PostprocessSettings, read_ensemble  # noqa: E402
from hpasc.inference.postprocess import postprocess  # noqa: E402
from hpasc.inference.stage import InferSettings, infer_folder  # noqa: E402
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from hpasc.models.registry import create_model  # noqa: E402
from hpasc.models.spec import ModelSpec  # noqa: E402
from hpasc.segmentation.classical import segment_classical  # noqa: E402
from hpasc.submission.rle import encode_cells  # noqa: E402
from hpasc.submission.rows import prediction_string  # noqa: E402

REAL = HERE.parents[1] / "shared" / "data" / "hpa_real"


def make_ensemble(root: Path, members: int, tile_size: int) -> Path:
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), tile_size)
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


def stage_times(images: Path, ensemble: LoadedEnsemble, settings: InferSettings) -> dict[str, float]:
    """Mean seconds per image of each stage, sequentially in this process."""
    folder = scan_images(images)
    totals = dict.fromkeys(("read", "segment (classical)", "cut cells", "RLE", "score", "post-process"),
                           0.0)
    for image_id in folder.ids:
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            totals[name] += now - clock
            clock = now

        image = folder.read(image_id)
        lap("read")
        nuclei, cells = segment_classical(image)
        lap("segment (classical)")
        tiles, rows = cut_image(image, cells, nuclei, image_id, [], ensemble.recipes[0])
        lap("cut cells")
        masks = encode_cells(cells, rows["mask_id"].tolist())
        lap("RLE")
        scores = [ensemble(torch.from_numpy(tiles[i:i + settings.batch_size]))
                  for i in range(0, len(tiles), settings.batch_size)]
        lap("score")
        combined = postprocess(np.concatenate([np.zeros((0, 19)), *scores]), rows["border"].to_numpy(),
                               rows["outlier"].to_numpy(), PostprocessSettings())
        prediction_string(list(masks.values()), combined)
        lap("post-process")
    return {name: seconds / len(folder.ids) for name, seconds in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=cli.positive_int, default=7, help="checkpoints in the ensemble")
    parser.add_argument("--tile-size", type=cli.positive_int, default=512, help="the models' tile size")
    parser.add_argument("--copies", type=cli.positive_int, default=1, help="copies of each real image")
    parser.add_argument("--workers", type=cli.positive_int, default=2, help="worker processes of the run")
    parser.add_argument("-b", "--batch-size", type=cli.positive_int, default=32, help="tiles per batch")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = InferSettings(backend="classical", batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ensemble_file = make_ensemble(root, args.members, args.tile_size)
        images = copy_images(root, args.copies)
        count = len(scan_images(images).ids)
        loaded = LoadedEnsemble(read_ensemble(ensemble_file), device)
        stages = stage_times(images, loaded, settings)
        options = runtime.CommonOptions(workers=args.workers, device=device.type, progress=False)
        start = time.perf_counter()
        failed = infer_folder(scan_images(images), ensemble_file, root / "submission.csv", None, settings, options)
        total = (time.perf_counter() - start) / count
        assert not failed, failed
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"{count} images of 2048², {args.members} x B0 at {args.tile_size} px, {where}")
    for name, seconds in stages.items():
        print(f"  {name:<22} {seconds:7.2f} s/image")
    print(f"  {'sum of stages':<22} {sum(stages.values()):7.2f} s/image (one process, one after another)")
    print(f"infer_folder, {args.workers} workers   {total:7.2f} s/image (pipelined, incl. model loading)")


if __name__ == "__main__":
    main()
