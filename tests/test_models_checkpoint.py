"""Checkpoints (save, load, rebuild, find the latest) and scoring tiles into 19 probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hpasc.cells.tile_spec import TileSpec
from hpasc.core.errors import InputError
from hpasc.models.checkpoint import (CHECKPOINT_FORMAT, build_model, checkpoint_path, find_latest, load_checkpoint,
                                     make_checkpoint, run_checkpoints, save_checkpoint)
from hpasc.models.registry import create_model
from hpasc.models.scoring import prepare_batch, score_tiles, to_probabilities
from hpasc.models.spec import ModelSpec

TILE = 32
SPEC = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(TILE))
LOW, HIGH = math.log(1 / 3), math.log(3)  # sigmoid: 0.25 and 0.75


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fixed_input() -> torch.Tensor:
    return torch.rand(3, 4, TILE, TILE, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, dict]:
    """A model whose BatchNorm statistics moved away from their initial values, and its checkpoint."""
    torch.manual_seed(0)
    model = create_model(SPEC.arch, len(SPEC.outputs), SPEC.in_channels, SPEC.tile_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(fixed_input()).sum().backward()
    optimizer.step()
    model.eval()
    training_state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                      "python_rng": (3, (1, 2), None)}
    checkpoint = make_checkpoint(model, SPEC, epoch=3, metrics=[{"loss": 0.5, "f1": 0.25}],
                                 args={"loss": "bce", "batch_size": 32, "pad": True},
                                 training_state=training_state)
    return model, checkpoint


def test_model_spec_round_trip_and_negative_head():
    assert ModelSpec.from_dict(SPEC.to_dict()) == SPEC
    assert SPEC.to_dict()["outputs"] == list(range(18)) and SPEC.scale == 1 / 65535
    assert not SPEC.negative_head
    assert ModelSpec("efficientnet-b0", 4, tuple(range(19)), TileSpec(TILE)).negative_head
    for bad in ({"arch": "efficientnet-b0"}, {**SPEC.to_dict(), "outputs": [0, 0]},
                {**SPEC.to_dict(), "outputs": [19]},
                {**SPEC.to_dict(), "tile_spec": {**SPEC.tile_spec.to_dict(), "size": "big"}}):
        with pytest.raises(InputError, match="model_spec"):
            ModelSpec.from_dict(bad)


def test_round_trip_rebuilds_the_same_model(trained, tmp_path):
    model, checkpoint = trained
    path = checkpoint_path(tmp_path / "models", "b0-bce", 3)
    assert path == tmp_path / "models" / "b0-bce-3.pt"
    save_checkpoint(path, checkpoint)
    assert [p.name for p in path.parent.iterdir()] == ["b0-bce-3.pt"]  # no temporary file left
    loaded = load_checkpoint(path)
    assert loaded["format"] == CHECKPOINT_FORMAT and loaded["epoch"] == 3
    assert loaded["metrics"] == [{"loss": 0.5, "f1": 0.25}]
    assert loaded["args"] == {"loss": "bce", "batch_size": 32, "pad": True}
    assert torch.equal(loaded["training_state"]["torch_rng"], checkpoint["training_state"]["torch_rng"])
    rebuilt, spec = build_model(loaded)
    assert spec == SPEC and not rebuilt.training
    with torch.no_grad():
        assert torch.equal(rebuilt(fixed_input()), model(fixed_input()))
    optimizer = torch.optim.AdamW(rebuilt.parameters(), lr=1.0)
    optimizer.load_state_dict(loaded["training_state"]["optimizer"])
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_ddp_prefixes_are_dropped_on_save_and_on_load(trained):
    model, checkpoint = trained
    wrapped = make_checkpoint(nn.DataParallel(model), SPEC, 1, [], {})
    assert wrapped["model_state"].keys() == checkpoint["model_state"].keys()
    prefixed = {**checkpoint, "model_state": {f"module.{k}": v for k, v in checkpoint["model_state"].items()}}
    rebuilt, _ = build_model(prefixed)
    with torch.no_grad():
        assert torch.equal(rebuilt(fixed_input()), model(fixed_input()))


def test_a_state_that_does_not_fit_its_spec_is_refused(trained):
    _, checkpoint = trained
    wider = {**checkpoint, "model_spec": {**checkpoint["model_spec"], "outputs": list(range(19))}}
    with pytest.raises(InputError, match=r"does not fit its model_spec: _fc.weight has shape \[18, 1280\]"):
        build_model(wider)


def test_unloadable_values_are_refused_before_writing(trained, tmp_path):
    _, checkpoint = trained
    path = tmp_path / "x-1.pt"
    with pytest.raises(TypeError, match=r"checkpoint\['metrics'\]\[0\]\['f1'\] is a numpy.float64"):
        save_checkpoint(path, {**checkpoint, "metrics": [{"f1": np.float64(0.5)}]})
    with pytest.raises(ValueError, match="missing format"):
        save_checkpoint(path, {k: v for k, v in checkpoint.items() if k != "format"})
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_damaged_or_foreign_files_are_one_line_errors(trained, tmp_path):
    _, checkpoint = trained
    good = tmp_path / "good.pt"
    save_checkpoint(good, checkpoint)
    truncated, random_bytes = tmp_path / "truncated.pt", tmp_path / "random.pt"
    foreign = tmp_path / "foreign.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save(checkpoint["model_state"], foreign)
    cases = {truncated: "not a readable checkpoint", random_bytes: "not a readable checkpoint",
             foreign: "not an hpasc checkpoint (no format field)",
             tmp_path / "absent.pt": "checkpoint does not exist"}
    for path, reason in cases.items():
        with pytest.raises(InputError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: {reason}") and "\n" not in message
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, {**checkpoint, "format": CHECKPOINT_FORMAT + 1})
    with pytest.raises(InputError, match="checkpoint format 2 is not the one this version reads"):
        load_checkpoint(newer)


def test_find_latest_takes_the_highest_epoch_of_the_run_only(tmp_path):
    assert find_latest(tmp_path / "absent", "b0") is None
    for name in ("b0-9.pt", "b0-10.pt", "b0-bce-30.pt", ".b0-11.pt.abc.tmp.pt", "b0-12.pt.tmp", "b0-x.pt",
                 "b0-20.pt.partial", "other-40.pt"):
        (tmp_path / name).write_bytes(b"")
    assert find_latest(tmp_path, "b0") == (tmp_path / "b0-10.pt", 10)
    assert find_latest(tmp_path, "b0-bce") == (tmp_path / "b0-bce-30.pt", 30)
    assert find_latest(tmp_path, "b1") is None
    assert run_checkpoints(tmp_path, "b0") == [tmp_path / "b0-9.pt", tmp_path / "b0-10.pt"]
    assert run_checkpoints(tmp_path / "absent", "b0") == []


def test_probabilities_derive_negative_from_the_most_confident_class():
    logits = torch.full((2, 18), LOW)
    logits[0, 5] = HIGH
    logits[1] = 0.0
    probabilities = to_probabilities(logits, SPEC)
    assert probabilities.shape == (2, 19) and probabilities.dtype == torch.float32
    assert torch.allclose(probabilities[0, :18], torch.tensor([0.25] * 5 + [0.75] + [0.25] * 12))
    assert probabilities[0, 18].item() == pytest.approx(0.25)  # 1 − 0.75
    assert probabilities[1, 18].item() == pytest.approx(0.5)  # 1 − 0.5


def test_probabilities_of_a_negative_head_follow_its_output_order():
    spec = ModelSpec("efficientnet-b0", 4, tuple(reversed(range(19))), TileSpec(TILE))
    logits = torch.zeros(1, 19)
    logits[0, 0] = HIGH  # the Negative output, first in this order
    logits[0, 18] = LOW  # class 0
    probabilities = to_probabilities(logits, spec)[0]
    assert probabilities[18].item() == pytest.approx(0.75)
    assert probabilities[0].item() == pytest.approx(0.25)
    assert torch.allclose(probabilities[1:18], torch.full((17,), 0.5))


def test_prepare_batch_scales_and_resizes_with_antialiasing():
    stripes = torch.tensor([65535, 65535, 0, 0], dtype=torch.int32).repeat(16)  # period 4 along x
    tiles = stripes.expand(2, 4, 64, 64).to(torch.uint16)
    batch = prepare_batch(tiles, SPEC, "cpu")
    assert batch.shape == (2, 4, TILE, TILE) and batch.dtype == torch.float32
    # Antialiased 2× reduction weighs four pixels 1/8, 3/8, 3/8, 1/8: 0.75 and 0.25 inside, where
    # plain bilinear would sample the stripes back as 1 and 0.
    interior = batch[0, 0, 10, 1:-1]
    assert torch.allclose(interior, torch.tensor([0.25, 0.75] * 15), atol=1e-6)
    full = prepare_batch(torch.full((1, 4, TILE, TILE), 65535, dtype=torch.uint16), SPEC, "cpu")
    assert torch.equal(full, torch.ones(1, 4, TILE, TILE))
    with pytest.raises(ValueError, match=r"expected \(B, 4, S, S\) tiles"):
        prepare_batch(torch.zeros(1, 3, TILE, TILE, dtype=torch.uint16), SPEC, "cpu")


def test_score_tiles_gives_one_row_per_tile_in_eval_mode(trained):
    model, _ = trained
    generator = torch.Generator().manual_seed(6)
    tiles = torch.randint(0, 65536, (5, 4, 48, 48), generator=generator).to(torch.uint16)
    model.train()
    scores = score_tiles(model, SPEC, [tiles[:3], tiles[3:]], "cpu")
    assert model.training  # its mode is restored
    model.eval()
    with torch.no_grad():
        expected = to_probabilities(model(prepare_batch(tiles, SPEC, "cpu")), SPEC).numpy()
    assert scores.shape == (5, 19) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert score_tiles(model, SPEC, [], "cpu").shape == (0, 19)
