"""A timm backbone end to end (``--arch timm:NAME``): train_me.py trains it, infer.py scores with it,
Grad-CAM explains it; its ImageNet start from a weights file with timm's 4-channel adaptation, the
offline fallback, and unknown names."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch

from hpasc.core.errors import InputError
from hpasc.models.architecture import Pretrained
from hpasc.models.checkpoint import build_model, load_checkpoint
from hpasc.models.registry import architecture, create_model
from hpasc.submission.check import check_submission
from hpasc.submission.rows import read_submission
from tests.conftest import assert_one_line_error, make_dataset, run_script

TINY = "test_efficientnet"  # timm's own ~0.1 M-parameter test model
ARCH = f"timm:{TINY}"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A dataset and a timm backbone trained on it by train_me.py (2 short epochs at 32 px)."""
    root = make_dataset(tmp_path_factory.mktemp("timm"), images=12, size=384, tile=32, seed=7)
    result = run_script("train_me.py", "-i", root / "dataset", "-s", root / "models", "--arch", ARCH,
                        "--pretrained", "none", "--epochs", "2", "--epoch-size", "64", "--tile-size", "32",
                        "--workers", "1", "--no-progress", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_train_me_trains_a_timm_backbone_that_rebuilds_from_its_checkpoint(trained: Path) -> None:
    path = trained / "models" / f"{TINY}-bce-2.pt"  # the run is named after the model, without "timm:"
    checkpoint = load_checkpoint(path)
    model, spec = build_model(checkpoint)
    assert spec.arch == ARCH and spec.tile_size == 32 and spec.outputs == tuple(range(18))
    assert isinstance(model, timm.models.EfficientNet)
    assert model(torch.zeros(2, 4, 32, 32)).shape == (2, 18)
    assert [m["epoch"] for m in checkpoint["metrics"]] == [1, 2]


def test_infer_and_gradcam_work_on_the_timm_backbone(trained: Path, tmp_path: Path) -> None:
    images = tmp_path / "test"
    made = run_script("-m", "hpasc.commands.synthetic", "-o", images, "-n", "2", "--size", "256", "--seed", "3",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    checkpoint = trained / "models" / f"{TINY}-bce-2.pt"
    out = tmp_path / "submission.csv"
    inferred = run_script("infer.py", "-i", images, "-e", checkpoint, "-o", out, "--backend", "classical",
                          "--workers", "1", "--no-progress")
    assert inferred.returncode == 0, inferred.stderr
    submission = read_submission(out)
    assert len(submission) == 2 and check_submission(submission, None, None) == []
    assert submission["PredictionString"].str.len().gt(0).all()

    cams = tmp_path / "cams"
    explained = run_script("-m", "hpasc.commands.gradcam", "--checkpoint", checkpoint, "--dataset",
                           trained / "dataset", "--limit", "2", "--classes", "0", "--out", cams,
                           "--no-progress")
    assert explained.returncode == 0, explained.stderr
    assert len(list(cams.glob("*_c0.png"))) == 2 and (cams / "index.html").is_file()
    wrong = run_script("-m", "hpasc.commands.gradcam", "--checkpoint", checkpoint, "--dataset", trained / "dataset",
                       "--limit", "1", "--layer", "conv_head", "--out", tmp_path / "no", "--no-progress")
    assert_one_line_error(wrong, "timm:test_efficientnet has no Grad-CAM layer 'conv_head'", "last_stage")


def test_imagenet_weights_from_a_file_with_timms_four_channel_stem(tmp_path: Path) -> None:
    torch.manual_seed(1)
    imagenet = timm.create_model(TINY, num_classes=1000)  # RGB stem, 1000-class head
    weights = tmp_path / "imagenet.pth"
    torch.save(imagenet.state_dict(), weights)
    torch.manual_seed(2)
    model = create_model(ARCH, 18, in_channels=4, tile_size=32)
    source = architecture(ARCH).initialise(model, 4, Pretrained(str(weights)))
    assert source == str(weights)
    ours, theirs = model.state_dict(), imagenet.state_dict()
    stem = "conv_stem.weight"
    assert ours[stem].shape[1] == 4 and theirs[stem].shape[1] == 3
    # timm's in_chans adaptation: RGB filters repeated over the channels, rescaled by 3/4.
    assert torch.allclose(ours[stem][:, :3], theirs[stem] * 3 / 4)
    assert torch.allclose(ours[stem][:, 3], theirs[stem][:, 0] * 3 / 4)
    body = [key for key in ours if key != stem and not key.startswith("classifier.")]
    assert len(body) > 10 and all(torch.equal(ours[key], theirs[key]) for key in body)
    assert ours["classifier.weight"].shape == (18, theirs["classifier.weight"].shape[1])

    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), other)
    with pytest.raises(InputError, match="other.pth: not ImageNet weights of test_efficientnet"):
        architecture(ARCH).initialise(model, 4, Pretrained(str(other)))
    with pytest.raises(InputError, match="absent.pth: ImageNet weights file does not exist"):
        architecture(ARCH).initialise(model, 4, Pretrained(str(tmp_path / "absent.pth")))


def test_offline_auto_trains_from_scratch_with_one_warning(monkeypatch, caplog) -> None:
    # As on a machine without a network (HF_HUB_OFFLINE=1 is read when huggingface_hub is imported).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = create_model(ARCH, 18, in_channels=4, tile_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="hpasc"):
        assert architecture(ARCH).initialise(model, 4, Pretrained("auto")) is None
        assert architecture(ARCH).initialise(model, 4, Pretrained("none")) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("hpasc")]
    assert len(warnings) == 1 and "training from scratch" in warnings[0].getMessage()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_timm_models_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="timm has no model 'no_such_net'"):
        architecture("timm:no_such_net")
    result = run_script("train_me.py", "-i", tmp_path, "--arch", "timm:no_such_net", cwd=tmp_path,
                        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train_me.py: error: argument --arch: timm has no model 'no_such_net'" in result.stderr


def test_an_unreachable_hub_is_given_up_at_once(tmp_path: Path) -> None:
    # Issue 29, item 10: offline, the hub's client retried for 14-45 s before the warning.
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every connection is refused
    code = ("import time; from hpasc.models.architecture import Pretrained; "
            "from hpasc.models.registry import architecture, create_model; "
            f"model = create_model({ARCH!r}, 18, in_channels=4, tile_size=32); began = time.monotonic(); "
            f"print(architecture({ARCH!r}).initialise(model, 4, Pretrained('auto')), time.monotonic() - began)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path)})
    source, seconds = result.stdout.split()
    assert source == "None" and float(seconds) < 3, result.stderr
    assert "training from scratch" in result.stderr
