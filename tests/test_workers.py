"""bounded_map: results in item order, never more than the window in flight, failures passed on;
the process pool's workers share the cores out to Blosc and never load torch; every thread pool of
a process follows its CPU affinity and leaves its helpers their cores (issue 29, item 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from hpasc.core.runtime import usable_cores
from hpasc.stages.train.data import loader_workers
from hpasc.core.workers import bounded_map, failure_reason, process_pool

ROOT = Path(__file__).resolve().parents[1]


def test_bounded_map_keeps_order_and_its_window() -> None:
    lock, running, most = threading.Lock(), [0], [0]

    def job(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01 * (item % 3))  # later items often finish first
        with lock:
            running[0] -= 1
        if item == 5:
            raise ValueError("five is bad")
        return item * item

    submitted: list[int] = []

    def submit(item: int) -> Future:
        submitted.append(item)
        return pool.submit(job, item)

    with ThreadPoolExecutor(8) as pool:
        seen = []
        for item, future in bounded_map(submit, range(12), window=3):
            assert future.done() and len(submitted) - len(seen) <= 3  # never more than 3 ahead
            seen.append((item, failure_reason(future) or future.result()))
    assert [item for item, _ in seen] == list(range(12))
    assert dict(seen)[4] == 16 and dict(seen)[5] == "ValueError: five is bad"
    assert most[0] <= 3
    assert list(bounded_map(submit, [], window=3)) == []


def test_pool_workers_share_the_cores_with_blosc() -> None:
    cores = usable_cores()
    for workers, expected in ((1, cores), (cores, 1), (cores + 1, 1)):
        with process_pool(workers) as pool:
            assert pool.submit(os.getenv, "BLOSC_NTHREADS").result() == str(expected)


def test_pool_workers_never_import_torch() -> None:
    # A spawned worker re-imports the entry point it was started from (as __mp_main__) and then
    # the module of each job it runs: with torch among them, each worker took 3 s to start and
    # 660 MB of memory, for networks that only the main process runs.
    code = textwrap.dedent("""
        import runpy, sys
        for script in ("segmentator.py", "infer.py", "image_cutter.py"):
            runpy.run_path(script, run_name="__mp_main__")
        import hpasc.stages.cut.stage, hpasc.stages.infer.jobs, hpasc.segmentation.jobs, hpasc.stages.train.tile_jobs
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm")))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_workers_do_not_run_the_entry_point_again(tmp_path) -> None:
    """A worker spawned from train_me.py (whose imports load torch) would run it again as
    __mp_main__: 3 s and 700 MB per tile-reader worker. Jobs are hpasc's functions: it need not."""
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent("""
        import torch  # as train_me.py's imports do
        from hpasc.core.workers import process_pool

        if __name__ == "__main__":
            with process_pool(2) as pool:
                seen = "sorted(m for m in __import__('sys').modules if m.split('.')[0] == 'torch')"
                print([future.result() for future in [pool.submit(eval, seen) for _ in range(2)]])
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[[], []]"


def _threads_in_subprocess(code: str) -> list[str]:
    prelude = textwrap.dedent("""
        import os, cv2, torch
        import numcodecs.blosc as blosc
        from hpasc.core import threads
        from hpasc.core.workers import process_pool
        def pools():
            return [torch.get_num_threads(), cv2.getNumThreads(), blosc.get_nthreads(),
                    os.environ.get("OMP_WAIT_POLICY")]
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    return result.stdout.split("\n")[:-1]


def test_thread_pools_follow_the_affinity_not_the_machine() -> None:
    # numcodecs sizes Blosc by the machine's count at import: 2 threads on a 2-core machine
    # where this process may use one core.
    lines = _threads_in_subprocess("""
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        threads.share_cores(0)
        print(pools())
    """)
    assert lines == ["[1, 1, 1, 'PASSIVE']"]


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores to share")
def test_the_main_process_leaves_a_pools_workers_their_cores() -> None:
    lines = _threads_in_subprocess("""
        cores = len(os.sched_getaffinity(0))
        threads.share_cores(0)
        print(pools())
        with process_pool(cores) as pool:
            print(pools(), pool.submit(os.getenv, "OMP_NUM_THREADS").result(),
                  pool.submit(os.getenv, "OMP_WAIT_POLICY").result())
        print(pools())
    """)
    cores = usable_cores()
    whole = f"[{cores}, {cores}, {cores}, 'PASSIVE']"
    assert lines == [whole, "[1, 1, 1, 'PASSIVE'] 1 PASSIVE", whole]


def test_a_model_on_the_cpu_reads_its_tiles_in_the_main_process() -> None:
    assert loader_workers(4, torch.device("cpu")) == 0
    assert loader_workers(4, torch.device("cuda")) == 4
