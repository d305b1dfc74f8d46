"""scripts/run_pipeline.sh (the real-data chain for a GPU machine), in its --dry-run mode: the
4th-place stages in order, the fine-tuned checkpoints derived from the epochs trained, the check
that every file a step needs will exist, optional extra data, labels, folds and tile size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpasc.segmentation.weight_files import CELL_WEIGHTS, NUCLEI_WEIGHTS
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "run_pipeline.sh"


def dry_run(data: Path, out: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The script's dry run with this Python (hpasc's environment) first on the PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", *options, str(data), str(out)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": path, **(env or {})})


def competition_folder(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "train.csv").write_text("ID,Label\n")
    return root


def commands_of(result: subprocess.CompletedProcess) -> list[str]:
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


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


def test_the_ensemble_follows_the_epochs_trained(tmp_path: Path) -> None:
    result = dry_run(competition_folder(tmp_path / "data"), tmp_path / "out", env={"EPOCHS": "2"})
    assert result.returncode == 0, result.stderr
    tuned = [c.split(" -l ")[1].split()[0] for c in commands_of(result) if "finetuner.py" in c]
    models = tmp_path / "out" / "models"
    assert tuned == [str(models / "b0-bce-1.pt"), str(models / "b0-focal-1.pt"), str(models / "b0-plain-2.pt")]
    six = dry_run(tmp_path / "data", tmp_path / "out", "--epochs", "6")
    tuned = [Path(c.split(" -l ")[1].split()[0]).name for c in commands_of(six) if "finetuner.py" in c]
    assert tuned == ["b0-bce-2.pt", "b0-bce-3.pt", "b0-focal-2.pt", "b0-focal-3.pt", "b0-focal-4.pt",
                     "b0-focal-5.pt", "b0-plain-6.pt"]


def hpa_weights_in(cache: Path) -> dict[str, str]:
    """An hpasc cache holding (stand-ins for) HPA's two weight files: the chain would segment with them."""
    for name in (NUCLEI_WEIGHTS, CELL_WEIGHTS):
        (cache / "segmentation").mkdir(parents=True, exist_ok=True)
        (cache / "segmentation" / name).write_bytes(b"stand-in")
    return {"HPASC_CACHE": str(cache)}


def test_folds_tile_size_and_labels_are_settable(tmp_path: Path) -> None:
    data = competition_folder(tmp_path / "data")
    (tmp_path / "theirs" / "relabel").mkdir(parents=True)
    result = dry_run(data, tmp_path / "out", "--folds", "3", "--tile-size", "256", "--labels", str(tmp_path / "theirs"),
                     env=hpa_weights_in(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert f"segmentation: the hpa backend (HPA's weights are in {tmp_path / 'cache' / 'segmentation'})" \
        in result.stdout
    commands = "\n".join(commands_of(result))
    assert "data_loader.py -i" in commands and "--folds 3" in commands and "--size 256" in commands
    assert commands.count(f"--relabel {tmp_path / 'theirs'}") == 3 + 7


def test_dry_run_names_a_file_no_step_makes(tmp_path: Path) -> None:
    data = competition_folder(tmp_path / "data")
    (data / "test").rmdir()
    result = dry_run(data, tmp_path / "out")
    assert result.returncode == 2
    assert f"error: {data / 'test'} is needed (by: python infer.py" in result.stderr


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    data = competition_folder(tmp_path / "data")
    for options, message in ((("--epochs", "0"), "--epochs needs a positive integer"),
                             (("--folds", "1"), "--folds needs at least 2"),
                             (("--labels", str(tmp_path / "none")), "no such folder"),
                             (("--frobnicate",), "unknown option --frobnicate")):
        result = dry_run(data, tmp_path / "out", *options)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_the_dry_run_names_the_backend_and_refuses_labels_it_would_not_fit(tmp_path: Path) -> None:
    """Without HPA's weights the chain segments with the classical backend, where the 4th place's
    labels (ids of HPA's masks) name other cells: the dry run says so and fails (issue 38, item 4)."""
    data = competition_folder(tmp_path / "data")
    (tmp_path / "theirs" / "relabel").mkdir(parents=True)
    empty = {"HPASC_CACHE": str(tmp_path / "empty")}
    plain = dry_run(data, tmp_path / "out", env=empty)
    assert plain.returncode == 0, plain.stderr
    assert "segmentation: the classical backend (HPA's weights are not in" in plain.stdout
    refused = dry_run(data, tmp_path / "out", "--labels", str(tmp_path / "theirs"), env=empty)
    assert refused.returncode == 2
    assert (f"error: the labels of {tmp_path / 'theirs'} name cells of HPA's segmentation, but the chain segments "
            "with the classical backend") in refused.stderr
