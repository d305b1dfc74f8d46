"""Every stage's last line is a one-line summary a person reads first: what was done, what
failed, where the output is."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_script


def _last(result, status: int = 0) -> str:
    assert result.returncode == status, result.stderr
    return result.stderr.strip().splitlines()[-1].split(" ", 2)[-1]


def test_the_chain_ends_each_stage_with_a_summary(tmp_path: Path) -> None:
    syn = tmp_path / "syn"
    assert run_script("-m", "hpasc.commands.synthetic", "-o", syn, "-n", "6", "--size", "256", "--seed", "9",
                      "--no-progress").returncode == 0
    (syn / "odd_red.png").write_bytes(b"")  # an incomplete image: counted as failed
    cells = tmp_path / "cells"
    assert _last(run_script("segmentator.py", "-i", syn, "-c", cells, "--backend", "classical", "--no-progress",
                            "--workers", "2"), 1) == \
        f"done: 6 images segmented (classical backend), 0 segmented before; 1 failed; output in {cells}"
    dataset = tmp_path / "dataset"
    cut = run_script("image_cutter.py", "-i", syn, "-m", syn / "truth", "-o", dataset, "--size", "32",
                     "--no-progress", "--workers", "2")
    assert _last(cut, 1).startswith("done: 6 images cut, 0 cut before; the dataset holds ")
    assert _last(cut, 1).endswith(f"; 1 failed; output in {dataset}")
    split = run_script("data_loader.py", "-i", dataset, "--folds", "3")
    assert _last(split).startswith("done: 4 training and 2 validation images (fold 0 of 3); 0 failed; output in ")
