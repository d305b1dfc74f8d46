"""What bench/host.py measures with: the GPU's measured rates, the meter that stands in for a stage's
progress bar, the stand-in GPU, and the figures per image. bench/host.py and bench/host_model.py
both import it (it imports neither)."""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
