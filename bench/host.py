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
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
B0_TILES_PER_S = 4000.0  # one B0 member at 512 px, float16, H200 (per member and tile)
UNET_IMAGES_PER_S = 80.0  # HPA's nuclei + cell DPN-UNets together, 512² inputs, float16, H200
B0_TRAIN_IMAGES_PER_S = 1302.0  # B0 forward + backward + Adam at 512 px, float16, compiled, H200
TRAIN_BATCH = 64


def _io_bytes() -> int:
    """This process's bytes through read and write system calls (pipes included)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Meter:
    """Stands in for a stage's progress bar: notes the main process's CPU time, pipe bytes and
    stand-in waits each time an image is finished."""

    marks: list[tuple[float, int, float]] = field(default_factory=list)
    waited: float = 0.0
    offloaded: float = 0.0  # CPU seconds the stand-ins spent on what a GPU's copy engine does
    shared: int = 0
    finished: tuple[float, int, float] | None = None

    def bar(self, iterable=None, **_):
        meter = self

        class Bar:
            def __iter__(self):
                for item in iterable:
                    meter.mark()
                    yield item

            def update(self, n: int = 1) -> None:
                for _ in range(n):
                    meter.mark()

            def reset(self, total: int = 0) -> None:
                pass

            def close(self) -> None:
                pass

            def set_postfix_str(self, *_, **__) -> None:
                pass
        return Bar()

    def mark(self) -> None:
        self.marks.append((self._cpu(), _io_bytes(), self.waited))

    def done(self) -> None:
        """Note the end of a piece of work that may outlast the last mark (infer.py's scoring)."""
        self.finished = (self._cpu(), _io_bytes(), self.waited)

    def _cpu(self) -> float:
        return time.process_time() - self.offloaded

    def end(self) -> None:
        """End the window at the last noted end of work when it came after the last mark."""
        if self.finished is not None and self.finished[0] > self.marks[-1][0]:
            self.marks[-1] = self.finished

    def per_image(self) -> tuple[float, float, float]:
        """(main CPU ms, pipe MB, wait ms) per image from the pool's start (the first mark) to the
        last image's end."""
        (cpu0, io0, wait0), (cpu1, io1, wait1) = self.marks[0], self.marks[-1]
        count = len(self.marks) - 1
        return 1000 * (cpu1 - cpu0) / count, (io1 - io0) / count / 1e6, 1000 * (wait1 - wait0) / count


class StandInGpu:
    """One GPU as the host sees it: work launched from any thread queues behind the work before it
    and runs for its measured time while the host goes on; a synchronising call sleeps until its
    work is done (a sleep holds no core, as a kernel running on the GPU holds none). The main
    thread's waits are counted: they are what serialises the main process with the GPU."""

    def __init__(self, meter: Meter) -> None:
        self.meter, self.busy_until, self.lock = meter, 0.0, threading.Lock()

    def launch(self, seconds: float) -> float:
        """Queue ``seconds`` of work; when it will be done."""
        with self.lock:
            self.busy_until = max(time.perf_counter(), self.busy_until) + seconds
            return self.busy_until

    def sync(self, until: float | None = None) -> None:
        """Wait until the work queued so far (or up to ``until``) is done."""
        start = time.perf_counter()
        time.sleep(max(0.0, (self.busy_until if until is None else until) - start))
        if threading.current_thread() is threading.main_thread():
            self.meter.waited += time.perf_counter() - start

    def run(self, seconds: float) -> None:
        """Work whose results the host takes back at once (a copy to the host synchronises)."""
        self.sync(self.launch(seconds))


def synthetic(work: Path, count: int) -> tuple[Path, Path]:
    """``count`` synthetic 2048² images and their known cell masks (``truth/``, ``truth/nuclei``)."""
    images = work / "images"
    subprocess.run([sys.executable, "-m", "hpasc.commands.synthetic", "-o", str(images), "-n", str(count),
                    "--size", "2048", "--seed", "0", "--no-progress", "--log-level", "WARNING"],
                   cwd=REPO, check=True)
    return images, images / "truth"


def startup_cpu(workers: int, module: str) -> float:
    """The workers' CPU seconds to start and import ``module`` (left out of the per-image figure)."""
    from hpasc.core.workers import process_pool

    before = _children_cpu()
    with process_pool(workers) as pool:
        for future in [pool.submit(exec, f"import {module}") for _ in range(workers)]:
            future.result()
    return _children_cpu() - before


@dataclass
class Figures:
    """Per unit of work (an image; a batch of ``unit_images`` for training)."""

    stage: str
    images: int
    main_ms: float
    pipe_mb: float
    shared_mb: float
    wait_ms: float
    worker_s: float
    gpu_s: float
    unit_images: int = 1

    def limits(self, cores: int) -> dict[str, float]:
        """Images/s that each resource allows on ``cores`` cores (the main process with its waits)."""
        return {"main process": self.unit_images * 1000 / (self.main_ms + self.wait_ms),
                "workers": self.unit_images * (cores - 1) / self.worker_s,
                "GPU": self.unit_images / self.gpu_s}

    def predicted(self, cores: int) -> tuple[float, str]:
        limits = self.limits(cores)
        name = min(limits, key=limits.get)
        return limits[name], name

    def line(self, cores: int) -> str:
        rate, limit = self.predicted(cores)
        return (f"{self.stage:<28} main {self.main_ms:6.1f} ms  waits {self.wait_ms:6.1f} ms  pipes "
                f"{self.pipe_mb:6.2f} MB  shared {self.shared_mb:6.1f} MB  workers {self.worker_s:5.2f} core-s  "
                f"GPU {1000 * self.gpu_s:5.1f} ms  -> {rate:5.1f} images/s on {cores} cores ({limit})")


def measure(stage: str, run, meter: Meter, workers: int, module: str, count: int, gpu_s: float) -> Figures:
    start_cpu = startup_cpu(workers, module)
    before = _children_cpu()
    run()
    worker_s = (_children_cpu() - before - start_cpu) / count
    main_ms, pipe_mb, wait_ms = meter.per_image()
    shared = meter.shared / count / 1e6
    return Figures(stage, count, main_ms, pipe_mb, shared, wait_ms, worker_s, gpu_s)


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
    sys.path[:0] = [str(HERE), str(HERE / "gpu"), str(REPO)]
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
