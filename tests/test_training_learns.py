"""It learns: a short CPU run on synthetic images (cell-level truth known) ranks cells far better
than chance, measured by the cell-level mAP of ``hpasc.tools.cell_eval`` against the synthetic
truth. One minute of training at 32 px; the bound is loose (twice the label-prevalence baseline;
the run reaches about three times it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import make_dataset, run_script


def test_a_short_cpu_run_beats_the_prevalence_baseline(tmp_path: Path) -> None:
    root = make_dataset(tmp_path, images=60, size=384, tile=32, seed=7)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    trained = run_script("train_me.py", "-i", root / "dataset", "-s", root / "models", "--pretrained", "none",
                         "--lr", "1e-3", "--epochs", "6", "--epoch-size", "1500", "--workers", "1",
                         "--no-progress", env=env, timeout=900)
    assert trained.returncode == 0, trained.stderr
    scored = run_script("-m", "hpasc.commands.cell_eval", "--checkpoint", root / "models" / "b0-bce-6.pt",
                        "--dataset", root / "dataset", "--truth", root / "syn" / "truth" / "cells.csv",
                        "--no-progress", env=env)
    assert scored.returncode == 0, scored.stderr
    last = scored.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"cell mAP: ([0-9.]+) \(prevalence baseline ([0-9.]+), (\d+) cells\)", last)
    assert match, last
    cell_map, baseline, cells = float(match[1]), float(match[2]), int(match[3])
    assert cells > 200
    assert cell_map > 2 * baseline, scored.stdout
