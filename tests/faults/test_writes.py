"""Items 9, 13 and 17 of the fault matrix: merges of one dataset take turns, so the last table
lists every complete image; a write that fails (a file size limit, a folder that is a file) ends
in one line naming the path and the reason, after the per-item failures; written files honour
the umask."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from hpasc import cellstore
from hpasc.core import atomic
from tests.conftest import REPO, make_dataset, run_script
from tests.test_cellstore import write_all


def test_a_merge_waits_for_the_one_running_and_then_lists_every_image(tmp_path: Path) -> None:
    write_all(tmp_path, ["img-a"])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hpasc.core import locks\n"
                               f"with locks.exclusive({str(tmp_path)!r}, 'a merge'):\n"
                               "    print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert holder.stdout.readline().strip() == "held"
    merged: list[pd.DataFrame] = []
    waiting = threading.Thread(target=lambda: merged.append(cellstore.merge(tmp_path)))
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive() and not merged, "the merge did not wait for the lock"
    write_all(tmp_path, ["img-b"])  # finished by another shard while the first merge ran
    holder.communicate("\n", timeout=30)
    waiting.join(timeout=30)
    assert set(merged[0]["image_id"]) == {"img-a", "img-b"}


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _run_limited(limit: int, *args: str | Path) -> subprocess.CompletedProcess:
    script = REPO / str(args[0]) if str(args[0]).endswith(".py") else args[0]
    return subprocess.run([sys.executable, str(script), *map(str, args[1:])], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300,
                          preexec_fn=_limit_file_size(limit))


def _one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_a_checkpoint_over_the_file_size_limit_is_one_line(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, images=6, size=256, tile=32, seed=5)
    result = _run_limited(1 << 20, "train_me.py", "-i", root / "dataset", "-s", tmp_path / "models", "-n", "r",
                          "--pretrained", "none", "--epochs", "1", "--epoch-size", "32", "--workers", "1",
                          "--no-progress")
    _one_error_line(result, str(tmp_path / "models" / "r-1.pt"), "File too large")
    assert not (tmp_path / "models" / "r-1.pt").exists()
    assert not [p for p in (tmp_path / "models").iterdir() if atomic.is_temporary(p)]


def test_per_item_write_failures_are_logged_and_the_stage_goes_on(tmp_path: Path) -> None:
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "syn", "-n", "3", "--size", "256",
                      "--seed", "6",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    result = _run_limited(600, "segmentator.py", "-i", tmp_path / "syn", "-c", tmp_path / "cells", "--backend",
                          "classical", "--workers", "2", "--no-progress")
    failed = [line for line in result.stderr.splitlines() if " failed: " in line and "File too large" in line]
    assert len(failed) == 3, result.stderr  # each image named, before the stage's own last write fails
    _one_error_line(result, str(tmp_path / "cells" / "manifest.json"), "File too large")
    assert not list((tmp_path / "cells").glob("*.png"))


def test_an_output_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "syn", "-n", "1", "--size", "128",
                      "--seed", "6",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    result = run_script("segmentator.py", "-i", tmp_path / "syn", "-c", tmp_path / "file" / "cells", "--backend",
                        "classical", "--no-progress")
    _one_error_line(result, str(tmp_path / "file"))


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        import importlib
        importlib.reload(atomic)
        atomic.write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)
        importlib.reload(atomic)
    atomic.write_text(tmp_path / "b.txt", "x")
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~previous
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "syn", "-n", "1", "--size", "128",
                      "--seed", "6",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "syn").glob("*.png")}
    assert modes == {0o666 & ~previous}
