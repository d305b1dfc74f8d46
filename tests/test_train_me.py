"""train_me.py and finetuner.py as real subprocesses on a small synthetic dataset: the SPEC
command lines, checkpoints and metrics, resume after SIGKILL, torchrun, bad input."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from efficientnet_pytorch import EfficientNet

from hpasc.models.checkpoint import build_model, find_latest, load_checkpoint, save_checkpoint
from hpasc.models.backbones.efficientnet import IMAGENET_URLS
from tests.conftest import REPO, SAMPLE_LABELS, assert_one_line_error, make_dataset, run_script

FAST = ("--epochs", "2", "--epoch-size", "64", "--tile-size", "32", "--workers", "1", "--no-progress")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder laid out as the SPEC command lines expect: ``dataset/`` with its split, and an
    ImageNet weights cache (random weights in efficientnet-pytorch's layout, made here)."""
    root = make_dataset(tmp_path_factory.mktemp("train"), images=12, size=384, tile=32, seed=5)
    cache = root / "cache" / "imagenet"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    imagenet = EfficientNet.from_name("efficientnet-b0")
    torch.save(imagenet.state_dict(), cache / IMAGENET_URLS["efficientnet-b0"].rsplit("/", 1)[-1])
    return root


def offline_env(root: Path) -> dict[str, str]:
    return {**os.environ, "HPASC_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}


def train(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_script("train_me.py", *args, cwd=root, env=offline_env(root), timeout=timeout)


def test_spec_command_lines_train_and_finetune(workdir: Path) -> None:
    first = train(workdir, "-c", "bce", "-s", "models", "-n", "b0-bce", "-b", "32", "-p", *FAST,
                  "--relabel", str(SAMPLE_LABELS))
    assert first.returncode == 0, first.stderr
    assert "initialised efficientnet-b0 from ImageNet weights" in first.stderr
    assert "not in the dataset" in first.stderr  # the real relabel files name cells of real images
    second = train(workdir, "-c", "focal", "-s", "models", "-n", "b0-focal", "-b", "32", "-r", *FAST)
    assert second.returncode == 0, second.stderr
    models = workdir / "models"
    assert {p.name for p in models.glob("*.pt")} == {"b0-bce-1.pt", "b0-bce-2.pt", "b0-focal-1.pt",
                                                      "b0-focal-2.pt"}
    metrics = pd.read_csv(models / "b0-bce-metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics["val_map"].between(0, 1).all() and (metrics["train_cells"] == 64).all()
    best, best_map = int(metrics.loc[metrics["val_map"].idxmax(), "epoch"]), metrics["val_map"].max()
    summary = first.stderr.strip().splitlines()[-1]
    assert summary.endswith(f"INFO done: b0-bce trained to epoch 2 of 2 in models; best validation mAP "
                            f"{best_map:.4f} at epoch {best} (models/b0-bce-{best}.pt)")
    args = yaml.safe_load((models / "b0-focal-args.yaml").read_text())
    assert args["loss"] == "focal" and args["augment"]["resize_p"] == 0.4

    checkpoint = load_checkpoint(models / "b0-bce-2.pt")
    model, spec = build_model(checkpoint)  # rebuilt from the file alone
    assert spec.tile_size == 32 and spec.outputs == tuple(range(18)) and checkpoint["epoch"] == 2
    assert model(torch.zeros(1, 4, 32, 32)).shape == (1, 18)

    for loss, flag in (("bce", "-p"), ("focal", "-r")):
        result = run_script("finetuner.py", "-c", loss, "-l", f"models/b0-{loss}-2.pt", "-s", "finetuned",
                            "-b", "32", flag, "--workers", "1", "--no-progress", cwd=workdir,
                            env=offline_env(workdir))
        assert result.returncode == 0, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert f"INFO done: b0-{loss}-2.pt fine-tuned on " in last and " relabelled), train loss " in last
        assert last.endswith(f"; 0 failed; output in finetuned/b0-{loss}-2.pt")
    tuned = load_checkpoint(workdir / "finetuned" / "b0-bce-2.pt")
    assert tuned["metrics"][-1]["stage"] == "finetune" and tuned["args"]["finetune"]["lr"] == 3e-5
    before, after = checkpoint["model_state"], tuned["model_state"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    shutil.copytree(workdir / "dataset", workdir / "another")
    elsewhere = run_script("finetuner.py", "-l", "models/b0-bce-2.pt", "-i", "another", "-s", "tuned-elsewhere",
                           "--workers", "1", "--no-progress", cwd=workdir, env=offline_env(workdir))
    assert elsewhere.returncode == 0, elsewhere.stderr  # said, not refused (issue 38, item 9)
    assert f"models/b0-bce-2.pt was trained on {(workdir / 'dataset').resolve()}; fine-tuning it on another, " \
           "another dataset" in elsewhere.stderr
    assert "another dataset" not in result.stderr  # the same dataset: no word
    again = run_script("finetuner.py", "-l", "models/b0-bce-2.pt", "-s", "finetuned", "--no-progress",
                       cwd=workdir, env=offline_env(workdir))
    assert again.returncode == 0 and "exists, skipped" in again.stderr
    assert again.stderr.strip().endswith("done: 0 checkpoints fine-tuned, 1 fine-tuned before; 0 failed; "
                                         "output in finetuned/b0-bce-2.pt")


def fourth_place_folder(root: Path) -> Path:
    """A folder laid out as the 4th place's, naming cells of the synthetic dataset."""
    cells = pd.read_csv(root / "dataset" / "cells.csv")["cell_id"].tolist()
    folder = root / "theirs"
    for sub in ("relabel", "validation", "auto-relabel"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "relabel" / "1.txt").write_text("".join(f"{c} 5\n" for c in cells[:6]))
    (folder / "validation" / "2.txt").write_text("".join(f"{c} 4\n" for c in cells[-10:]))
    (folder / "validation" / "8.txt").write_text("".join(f"{c} 2\n" for c in cells[-14:-10]))
    (folder / "auto-relabel" / "0.p").write_bytes(pickle.dumps(set(cells[6:20])))
    return folder


def test_the_4th_place_folder_trains_and_finetunes_with_its_validation_set(workdir: Path) -> None:
    theirs = fourth_place_folder(workdir)
    result = train(workdir, "-s", "theirs-models", "-n", "t", *FAST, "--epochs", "1", "--relabel", str(theirs))
    assert result.returncode == 0, result.stderr
    assert "the 4th place's labels" in result.stderr and "14 validation cells" in result.stderr
    assert "validation files choose the validation cells" in result.stderr
    checkpoint = load_checkpoint(workdir / "theirs-models" / "t-1.pt")
    assert checkpoint["args"]["labels"]["label_format"] == "auto"
    tuned = run_script("finetuner.py", "-l", "theirs-models/t-1.pt", "-s", "theirs-tuned", "--workers", "1",
                       "--no-progress", cwd=workdir, env=offline_env(workdir))
    assert tuned.returncode == 0, tuned.stderr
    assert "fine-tuning on 14 validation cells (14 relabelled" in tuned.stderr
    wrong = train(workdir, "-s", "theirs-models", "-n", "w", *FAST, "--relabel", str(SAMPLE_LABELS),
                  "--label-format", "4th-place")
    assert_one_line_error(wrong, "hpa_samples/labels is not laid out as theirs")


def test_an_existing_run_needs_resume_or_overwrite(workdir: Path) -> None:
    args = ("-s", "again", "-n", "run", "--pretrained", "none", "--epochs", "1", "--tile-size", "32",
            "--workers", "1", "--no-progress", "--epoch-size", "32")
    assert train(workdir, *args).returncode == 0
    assert_one_line_error(train(workdir, *args), "again/run-1.pt exists", "--resume")
    finished = train(workdir, *args, "--resume")
    assert finished.returncode == 0 and "already trained" in finished.stderr
    assert_one_line_error(train(workdir, *args[:-2], "--epoch-size", "64", "--resume"), "other settings")
    assert train(workdir, *args, "--overwrite").returncode == 0


def test_resume_with_more_epochs_extends_the_run_along_the_longer_cosine(workdir: Path) -> None:
    args = ("-s", "longer", "-n", "run", "--pretrained", "none", "--tile-size", "32", "--workers", "1",
            "--no-progress", "--epoch-size", "32", "--lr", "1e-3", "--min-lr", "1e-5")
    assert train(workdir, *args, "--epochs", "1").returncode == 0
    extended = train(workdir, *args, "--epochs", "3", "--resume")
    assert extended.returncode == 0, extended.stderr
    assert "extending the run from 1 to 3 epochs" in extended.stderr
    history = load_checkpoint(workdir / "longer" / "run-3.pt")["metrics"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    # Epoch 2 starts where a 3-epoch run's cosine stands after one epoch: halfway to --min-lr.
    assert [entry["lr"] for entry in history] == pytest.approx([1e-3, 1e-5 + (1e-3 - 1e-5) / 2, 1e-5])
    assert_one_line_error(train(workdir, *args, "--epochs", "2", "--resume"), "other settings (epochs)")


def test_a_run_made_before_an_augmentation_field_and_the_segmentation_record_existed_resumes(workdir: Path) -> None:
    args = ("-s", "older", "-n", "run", "--pretrained", "none", "--tile-size", "32", "--workers", "1",
            "--no-progress", "--epoch-size", "32", "-p")
    assert train(workdir, *args, "--epochs", "1").returncode == 0
    # Rewrite the checkpoint as a version without the pad_range field and without the segmentation
    # record would have written it, and let it ask for 2 epochs so that the resumed run has one left.
    path = workdir / "older" / "run-1.pt"
    checkpoint = load_checkpoint(path)
    del checkpoint["args"]["augment"]["pad_range"]
    recorded = checkpoint["model_spec"].pop("segmentation")
    checkpoint["args"]["epochs"] = 2
    save_checkpoint(path, checkpoint)
    resumed = train(workdir, *args, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and (workdir / "older" / "run-2.pt").is_file()
    assert recorded == {"backend": "unknown", "weights": {}}  # the synthetic truth's masks
    assert load_checkpoint(workdir / "older" / "run-2.pt")["model_spec"]["segmentation"] == recorded
    changed = train(workdir, *args[:-1], "-r", "--epochs", "2", "--resume")
    assert_one_line_error(changed, "other settings (augment)")


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_resume_after_sigkill_matches_an_uninterrupted_run(workdir: Path) -> None:
    args = ["-n", "r", "--pretrained", "none", "--epochs", "3", "--epoch-size", "192", "--tile-size", "32",
            "--workers", "1", "--no-progress", "-b", "16"]
    assert train(workdir, "-s", "straight", *args).returncode == 0

    command = [sys.executable, str(REPO / "train_me.py"), "-s", "killed", *args]
    env = {**offline_env(workdir), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=workdir, env=env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _wait_for(workdir / "killed" / "r-1.pt", process, timeout=240)
        time.sleep(1.0)  # into epoch 2
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert find_latest(workdir / "killed", "r") == (workdir / "killed" / "r-1.pt", 1)
    assert not [p for p in (workdir / "killed").iterdir() if p.name.startswith(".")]

    resumed = train(workdir, "-s", "killed", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    assert pd.read_csv(workdir / "killed" / "r-metrics.csv")["epoch"].tolist() == [1, 2, 3]
    straight = load_checkpoint(workdir / "straight" / "r-3.pt")["model_state"]
    continued = load_checkpoint(workdir / "killed" / "r-3.pt")["model_state"]
    for key, value in straight.items():
        torch.testing.assert_close(continued[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_torchrun_two_processes(workdir: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "train_me.py"), "-s", "ddp", "-n", "d", "--pretrained", "none", "--device", "cpu",
               "--epochs", "1", "--epoch-size", "64", "--tile-size", "32", "--workers", "1", "--no-progress"]
    env = {**offline_env(workdir), "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    checkpoint = load_checkpoint(workdir / "ddp" / "d-1.pt")
    assert not any(k.startswith("module.") for k in checkpoint["model_state"])
    assert checkpoint["metrics"][0]["train_cells"] == 64


@pytest.mark.parametrize("args, fragments", [
    (("-i", "nowhere"), ("nowhere",)),
    (("-i", "syn"), ("syn: not a cell dataset", "hpasc-cut -i IMAGES", "hpasc-split -i DATASET")),
    (("--pretrained", "missing.pth"), ("missing.pth", "does not exist")),
])
def test_bad_input_is_one_line(workdir: Path, args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    assert_one_line_error(train(workdir, "-s", "bad", *FAST, *args), *fragments)


def test_resize_and_pad_flags_exclude_each_other(workdir: Path) -> None:
    result = train(workdir, "-r", "-p")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
