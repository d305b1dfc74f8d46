"""scripts/run_pipeline.sh (the real-data chain for a GPU machine), in its --dry-run mode: the
4th-place stages in order, seven fine-tuned checkpoints, optional extra data and relabels."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "run_pipeline.sh"


def dry_run(data: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", str(data), str(out)], capture_output=True,
                          text=True, timeout=60)


def competition_folder(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "train.csv").write_text("ID,Label\n")
    return root


def test_dry_run_lists_the_4th_place_stages_in_order(tmp_path: Path) -> None:
    result = dry_run(competition_folder(tmp_path / "data"), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    scripts = [c.split()[1] if c.startswith("python") else c.split()[0] for c in commands]
    assert scripts == ["segmentator.py", "image_cutter.py", "data_loader.py", "train_me.py", "train_me.py",
                       "train_me.py", *["finetuner.py"] * 7, "write", "infer.py"]
    assert any("train_me.py -c bce -n b0-bce -p" in c for c in commands)
    assert any("train_me.py -c focal -n b0-focal -r" in c for c in commands)
    last_focal = tmp_path / "out" / "models" / "b0-focal-15.pt"
    assert any(f"finetuner.py -l {last_focal}" in c for c in commands)
    assert not any("--relabel" in c or "publichpa" in c for c in commands)


def test_extra_data_and_relabels_join_when_present(tmp_path: Path) -> None:
    data = competition_folder(tmp_path / "data")
    (data / "kaggle_2021.tsv").write_text("Image\tLabel\n")
    (data / "relabel").mkdir()
    commands = dry_run(data, tmp_path / "out").stdout
    assert "download_publichpa.py" in commands
    assert f"-e {tmp_path / 'out' / 'publichpa_dataset'}" in commands
    assert commands.count("--relabel") == 3 + 7


def test_a_folder_without_the_competition_layout_is_refused(tmp_path: Path) -> None:
    result = dry_run(tmp_path, tmp_path / "out")
    assert result.returncode == 2 and result.stderr.startswith("error: ")
