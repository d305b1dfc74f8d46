"""The host model: what infer.py and segmentator.py cost the host per image, with no GPU.

The networks are replaced by stand-ins that do on the host what a GPU run does there (copy the
inputs out of host memory, as a host-to-device copy does) and then sleep for the GPU time measured
on an H200 (bench/RESULTS.md's GPU section: EfficientNet-B0 at 512 px ~4,000 tiles/s per member in
float16, HPA's two DPN-UNets ~80 images/s): a sleep holds no core, as a kernel running on the GPU
holds none. The rest runs for real on synthetic 2048² images (``hpasc.tools.synthetic``), with HPA's
segmentation fed realistic network maps made from each image's known masks, so ``label_cell``
does a real image's work. The stand-ins share one GPU (:class:`StandInGpu`): work from infer.py's
scoring thread and from its main thread's segmentation queues up as on one device.

Per image, from the start of the stage's worker pool (the models are loaded by then) to the end of
its last image:
- main ms: the main process's CPU milliseconds (all its threads). It is serial: the main process
  can finish at most 1000 / that images per second, whatever the cores and the GPU;
- waits ms: the main process's wall time spent waiting for the stand-in networks (the GPU time it
  does not overlap with its own work);
- MB between processes: bytes through the pipes between the main process and its workers (the
  main process's read and write system calls, /proc/self/io; the checkpoints are read before the
  window), and the bytes of the arrays handed over in shared memory, which are not copied;
- worker core-s: the workers' CPU seconds (their start-up measured apart and left out);
- predicted images/s on --cores cores: the least of the main process's ceiling, the workers'
  (cores - 1 over their core-s) and the GPU's (1 / its seconds per image).

Training (train_me's loader and Engine loop; a step queues the B0 training time measured on the
H200 on a stand-in stream, which a synchronising call waits for): per batch of 64 real 512 px tiles,
the same figures, the loader's workers' core-ms per tile, and the rates each resource allows.

Usage: python bench/host.py [--images 8] [--workers 2] [--members 7] [--label-scale 1] [--batches 40]
Ends with: host: infer main A ms/image, B MB/image between processes; segment main C ms/image;
train main D ms/batch, loader E core-ms/tile
"""

from __future__ import annotations

# Nothing heavy at the top (torch comes with host_model, imported by main).
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(HERE / "gpu"), str(REPO)]

from host_meter import B0_TILES_PER_S, B0_TRAIN_IMAGES_PER_S, TRAIN_BATCH, UNET_IMAGES_PER_S  # noqa: E402

def synthetic(work: Path, count: int) -> tuple[Path, Path]:
    """``count`` synthetic 2048² images and their known cell masks (``truth/``, ``truth/nuclei``)."""
    images = work / "images"
    subprocess.run([sys.executable, "-m", "hpasc.commands.synthetic", "-o", str(images), "-n", str(count),
                    "--size", "2048", "--seed", "0", "--no-progress", "--log-level", "WARNING"],
                   cwd=REPO, check=True)
    return images, images / "truth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="synthetic 2048² images (at least 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--members", type=int, default=7, help="B0 checkpoints in the ensemble")
    parser.add_argument("--label-scale", type=float, default=1.0, help="HPA's post-processing scale")
    parser.add_argument("--cores", type=int, default=16, help="cores of the machine predicted for")
    parser.add_argument("--batches", type=int, default=40, help="training batches of 64 (512 px tiles)")
    parser.add_argument("--train-only", action="store_true", help="only the training figures (no last line)")
    args = parser.parse_args()
    if args.images < 3:
        parser.error("--images must be at least 3")
    from host_model import run_infer, run_segment, run_train

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.train_only:
            print(run_train(work, args).line(args.cores))
            return
        images, truth = synthetic(work, args.images)
        rows = [run_segment(work, images, truth, args), run_infer(work, images, truth, args), run_train(work, args)]
    print(f"{args.images} synthetic 2048² images, {args.workers} workers, {args.members} x B0 512 px, "
          f"label scale {args.label_scale:g}; GPU stand-ins: B0 {B0_TILES_PER_S:g} tiles/s per member, "
          f"DPN-UNets {UNET_IMAGES_PER_S:g} images/s, B0 training {B0_TRAIN_IMAGES_PER_S:g} images/s; "
          f"training: {args.batches} batches of {TRAIN_BATCH} real 512 px tiles (figures per batch)")
    for row in rows:
        print(row.line(args.cores))
    segment, infer, train = rows
    limits = train.limits(args.cores)
    tile_ms = 1000 * train.worker_s / TRAIN_BATCH
    print(f"training on {args.cores} cores: loader {limits['workers']:.0f} tiles/s, main process "
          f"{TRAIN_BATCH * 1000 / train.main_ms:.0f} images/s alone, {limits['main process']:.0f} with its GPU waits")
    print(f"host: infer main {infer.main_ms:.1f} ms/image, {infer.pipe_mb:.2f} MB/image between processes; "
          f"segment main {segment.main_ms:.1f} ms/image; train main {train.main_ms:.1f} ms/batch, "
          f"loader {tile_ms:.2f} core-ms/tile")


if __name__ == "__main__":
    main()
