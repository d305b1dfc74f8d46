"""Every CUDA path against its CPU float32 twin: an AMP training step in each precision, the
GradScaler's state across a resume, channels-last scoring, torch.compile against eager, HPA's
networks, DDP with NCCL under torchrun (compiled, the default), and segmentator.py / infer.py on
the GPU (infer.py compiled). Run with ``pytest -m cuda`` on a GPU machine
(``bench/gpu/run.sh`` does); skipped without CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpasc.cells.tile_spec import TileSpec
from hpasc.core.runtime import CommonOptions
from hpasc.models.checkpoint import build_model, load_checkpoint, make_checkpoint, save_checkpoint
from hpasc.models.precision import Precision
from hpasc.models.registry import create_model
from hpasc.models.runner import ModelRunner
from hpasc.models.scoring import score_tiles
from hpasc.models.spec import ModelSpec
from hpasc.segmentation.network import DPNUNet
from hpasc.segmentation.predict import HpaNetworks
from hpasc.segmentation.scaling import prepare
from hpasc.stages.train.augment import AugmentSettings
from hpasc.stages.train.distributed import Process
from hpasc.stages.train.engine import Engine, place_model
from hpasc.submission.check import check_submission
from hpasc.submission.rows import read_submission
from hpasc.tools.synthetic import synthesize_image
from tests.conftest import REPO, make_dataset, run_script

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
TILE = 64
SPEC = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(TILE))
LOW_PRECISION = ("float16", "bfloat16")
# Largest difference of a probability from its CPU float32 value, per autocast dtype (bfloat16
# keeps 8 bits of mantissa, float16 11); float32 on CUDA may use TF32 convolutions (10 bits).
TOLERANCE = {"float32": 5e-3, "float16": 1e-2, "bfloat16": 5e-2}


def random_tiles(count: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 65535, (count, 4, TILE, TILE), dtype=np.uint16))


def engine(precision: Precision, seed: int = 0) -> Engine:
    torch.manual_seed(seed)
    process = Process(device=CUDA)
    model = place_model(create_model("efficientnet-b0", 18, tile_size=TILE), process, precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Engine(model, SPEC, optimizer, None, "bce", AugmentSettings.from_flags(False, True), process,
                  precision)


def train_steps(trained: Engine, steps: int) -> float:
    batches = [(random_tiles(8, step), torch.arange(8) + 8 * step) for step in range(steps)]
    targets = torch.rand(8 * steps, 18, generator=torch.Generator().manual_seed(1))
    return trained.train_epoch(batches, targets, torch.Generator().manual_seed(2),
                               CommonOptions(progress=False), "test")


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_amp_training_step_updates_the_weights(dtype: str) -> None:
    trained = engine(Precision(dtype, compile=False))
    before = [p.detach().clone() for p in trained.model.parameters()]
    loss = train_steps(trained, 3)
    assert np.isfinite(loss) and 0 < loss < 2
    changed = [not torch.equal(a, p) for a, p in zip(before, trained.model.parameters())]
    assert sum(changed) > 0.9 * len(changed)
    assert trained.scaler.is_enabled() == (dtype == "float16")
    assert all(p.dtype == torch.float32 for p in trained.model.parameters())  # master weights


def test_grad_scaler_state_survives_a_checkpoint(tmp_path: Path) -> None:
    first = engine(Precision("float16", compile=False))
    train_steps(first, 2)
    first.scaler.update(new_scale=1024.0)
    save_checkpoint(tmp_path / "r-1.pt", make_checkpoint(first.inner, SPEC, 1, [], {},
                                                          first.training_state()))
    resumed = engine(Precision("float16", compile=False), seed=5)
    resumed.load_training_state(load_checkpoint(tmp_path / "r-1.pt")["training_state"])
    assert resumed.scaler.get_scale() == 1024.0
    assert resumed.scaler.state_dict() == first.scaler.state_dict()
    assert np.isfinite(train_steps(resumed, 1))


@pytest.mark.parametrize("dtype", [*LOW_PRECISION, "float32"])
def test_channels_last_scoring_matches_cpu_float32(dtype: str) -> None:
    torch.manual_seed(0)
    model = create_model("efficientnet-b0", 18, tile_size=TILE).eval()
    checkpoint = make_checkpoint(model, SPEC, 1, [], {})
    tiles = [random_tiles(16, 3), random_tiles(5, 4)]
    reference = score_tiles(build_model(checkpoint, "cpu")[0], SPEC, tiles, "cpu")
    gpu_model, _ = build_model(checkpoint, CUDA, Precision(dtype))
    assert gpu_model._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    scores = score_tiles(gpu_model, SPEC, tiles, CUDA, Precision(dtype))
    assert scores.dtype == np.float32 and scores.shape == reference.shape == (21, 19)
    assert np.abs(scores - reference).max() < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [*LOW_PRECISION, "float32"])
def test_segmentation_networks_on_cuda_match_cpu(dtype: str) -> None:
    torch.manual_seed(0)
    nuclei, cells = DPNUNet().eval(), DPNUNet().eval()
    image = synthesize_image((512, 512), np.random.default_rng(3)).image
    batch = [prepare(image), prepare(image[..., ::-1].copy())]
    reference = HpaNetworks(nuclei, cells, "cpu")(batch)
    outputs = HpaNetworks(nuclei, cells, "cuda", Precision(dtype))(batch)
    for got, expected in zip(outputs, reference):
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() < 10 * TOLERANCE[dtype]
        agreement = (got.argmax(1) == expected.argmax(1)).mean()
        assert agreement > 0.99, agreement


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cuda"), images=12, size=384, tile=32, seed=5)


def test_torchrun_one_process_trains_with_nccl(workdir: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(REPO / "train_me.py"), "-s", "ddp", "-n", "d", "--pretrained", "none", "--device", "cuda",
               "--epochs", "2", "--epoch-size", "64", "--tile-size", "32", "--workers", "2", "--no-progress"]
    # prepended, not replaced: the device's extra packages come on the outer PYTHONPATH
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "NCCL_DEBUG": "INFO"}
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "NCCL INFO" in result.stdout + result.stderr  # the process group really is NCCL's
    checkpoint = load_checkpoint(workdir / "ddp" / "d-2.pt")
    assert not any(k.startswith("module.") for k in checkpoint["model_state"])
    assert checkpoint["training_state"]["scaler"]["scale"] > 0  # float16 autocast by default


def test_compiled_models_match_eager(monkeypatch, tmp_path: Path) -> None:
    """torch.compile (the default on CUDA): a training step's loss and scores as eager ones', its
    kernels kept in the hpasc cache."""
    monkeypatch.setenv("HPASC_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    eager, compiled = engine(Precision("float32", compile=False)), engine(Precision("float32"))
    assert compiled.running is not compiled.model
    assert train_steps(compiled, 2) == pytest.approx(train_steps(eager, 2), rel=1e-3)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    checkpoint = make_checkpoint(compiled.inner, SPEC, 1, [], {})
    assert not any(key.startswith("_orig_mod") for key in checkpoint["model_state"])
    tiles = [random_tiles(16, 3), random_tiles(5, 4)]  # two batch sizes: one recompilation
    runners = [ModelRunner(*build_model(checkpoint, CUDA, precision), CUDA, precision)
               for precision in (Precision("float16", compile=False), Precision("float16"))]
    torch.testing.assert_close(*(runner.score(tiles) for runner in runners), rtol=0, atol=TOLERANCE["float16"])
    assert any((tmp_path / "torch-compile").rglob("*"))


def test_segmentator_and_infer_run_on_cuda(workdir: Path, random_weights: Path, tmp_path: Path) -> None:
    images = workdir / "syn"
    weights = ("--nuclei-model", random_weights, "--cell-model", random_weights)
    result = run_script("segmentator.py", "-i", images, "-c", tmp_path / "cells", "--backend", "hpa",
                        *weights, "--device", "cuda", "--precision", "bfloat16", "--no-progress")
    assert result.returncode == 0, result.stderr
    trained = run_script("train_me.py", "-i", workdir / "dataset", "-s", tmp_path / "models", "--pretrained",
                         "none", "--epochs", "1", "--epoch-size", "64", "--device", "cuda", "--no-compile",
                         "--no-progress")
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "submission.csv"
    result = run_script("infer.py", "-i", images, "-e", tmp_path / "models" / "b0-bce-1.pt", "-o", out,
                        "--backend", "hpa", *weights, "--device", "cuda", "--no-progress")
    assert result.returncode == 0, result.stderr
    submission = read_submission(out)
    assert len(submission) == 12 and check_submission(submission, None, None) == []


def test_page_locked_slots_feed_the_gpu_exactly() -> None:
    """Tiles a spawned worker writes into a page-locked slot reach the GPU unchanged (the copy is
    asynchronous from such memory; scoring waits for it before the slot is lent again), and HPA's
    networks read their inputs straight from slots and write their maps straight into slots."""
    from hpasc.core.shared_arrays import SharedArrays, SlotRing
    from hpasc.core.workers import process_pool
    from hpasc.models.pinning import page_locker

    tiles = random_tiles(6, 11).numpy()
    with SlotRing(2, 1 << 20, page_locker(CUDA)) as ring, process_pool(1) as pool:
        for round_ in range(3):
            shared = pool.submit(SharedArrays.put, [tiles + round_], ring.lend(round_)).result()
            assert shared.lent
            with shared.opened() as (view,):
                on_gpu = torch.from_numpy(view).to(CUDA, non_blocking=True)
                assert torch.from_numpy(view).is_pinned()
                torch.cuda.synchronize()
            ring.settle(round_)
            np.testing.assert_array_equal(on_gpu.cpu().numpy(), tiles + round_)
    torch.manual_seed(0)
    networks = HpaNetworks(DPNUNet().eval(), DPNUNet().eval(), "cuda", Precision("float32"))
    image = prepare(synthesize_image((512, 512), np.random.default_rng(3)).image)
    with SlotRing(1, 8 << 20, networks.page_locker()) as inputs, \
            SlotRing(1, 16 << 20, networks.page_locker()) as outputs:
        shared = SharedArrays.put([image.cells], inputs.lend("image"))
        maps = SharedArrays.empty([(image.cells.shape, np.float32)] * 2, outputs.lend("image"))
        networks.run(shared.arrays(), [maps.arrays()])
        assert maps.lent and torch.from_numpy(maps.arrays()[0]).is_pinned()
        for got, expected in zip(maps.arrays(), networks([image])):
            np.testing.assert_array_equal(got, expected[0])
        shared.release()
        maps.release()
