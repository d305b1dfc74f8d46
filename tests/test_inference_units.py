"""The ensemble description, the ensemble's weighting and the 4th place's cell/image weighting on
hand-made score tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hpasc.cells.tile_spec import TileSpec
from hpasc.core.errors import InputError
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint
from hpasc.models.registry import create_model
from hpasc.models.spec import ModelSpec
from hpasc.stages.infer.ensemble import LoadedEnsemble
from hpasc.stages.infer.ensemble_file import WeightingSettings, read_ensemble
from hpasc.stages.infer.weighting import weight_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def constant_checkpoint(path: Path, probabilities: list[float]) -> Path:
    """A B0 checkpoint whose outputs are ``probabilities`` whatever the input (zero head weights,
    the logits as biases)."""
    outputs = len(probabilities)
    model = create_model("efficientnet-b0", outputs, tile_size=32)
    with torch.no_grad():
        model._fc.weight.zero_()
        model._fc.bias.copy_(torch.logit(torch.tensor(probabilities)))
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(outputs)), TileSpec(32))
    save_checkpoint(path, make_checkpoint(model, spec, 1, [], {}))
    return path


def test_group_and_member_weights_are_normalised(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.pt").write_bytes(b"x")
    (tmp_path / "e.yaml").write_text(
        "groups:\n"
        "  - weight: 0.2\n    members: [{checkpoint: a.pt, weight: 1}, {checkpoint: b.pt, weight: 3}]\n"
        "  - weight: 0.6\n    members: [c.pt]\n"
        "postprocessing: {cell_weight: 0.5, image_weight: 0.5}\n")
    ensemble = read_ensemble(tmp_path / "e.yaml")
    weights = {m.checkpoint.name: m.weight for m in ensemble.members}
    assert weights == pytest.approx({"a.pt": 0.25 * 0.25, "b.pt": 0.25 * 0.75, "c.pt": 0.75})
    assert ensemble.members[0].checkpoint == tmp_path / "a.pt"
    assert ensemble.postprocessing == WeightingSettings(0.5, 0.5, True, True)


@pytest.mark.parametrize("content, fragment", [
    ("groups: []", "non-empty list"),
    ("groups: [{weight: 1}]", "members"),
    ("groups: [{members: [missing.pt]}]", "missing.pt does not exist"),
    ("groups: [{weight: -1, members: [a.pt]}]", "number >= 0"),
    ("groups: [{members: [a.pt]}]\nextra: 1", "unknown key 'extra'"),
    ("groups: [{members: [a.pt]}]\npostprocessing: {cell: 1}", "unknown key 'cell'"),
    ("groups: [", "not a readable"),
])
def test_bad_ensemble_files_are_input_errors(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "e.yaml").write_text(content)
    with pytest.raises(InputError, match=fragment):
        read_ensemble(tmp_path / "e.yaml")


def test_a_json_file_and_a_single_checkpoint_work(tmp_path: Path) -> None:
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "e.json").write_text(json.dumps({"groups": [{"members": [{"checkpoint": "a.pt"}]}]}))
    assert read_ensemble(tmp_path / "e.json").members[0].weight == 1.0
    assert read_ensemble(tmp_path / "a.pt").members[0].checkpoint == tmp_path / "a.pt"


def test_ensemble_mean_then_negative_is_one_minus_max(tmp_path: Path) -> None:
    first = [0.1] * 18
    first[3] = 0.8
    second = [0.1] * 18
    second[5] = 0.6
    constant_checkpoint(tmp_path / "a.pt", first)
    constant_checkpoint(tmp_path / "b.pt", second)
    (tmp_path / "e.yaml").write_text("groups: [{weight: 3, members: [a.pt]}, {weight: 1, members: [b.pt]}]\n")
    loaded = LoadedEnsemble(read_ensemble(tmp_path / "e.yaml"), torch.device("cpu"))
    scores = loaded(torch.randint(0, 65535, (2, 4, 32, 32)).to(torch.uint16))
    assert scores.shape == (2, 19)
    assert scores[0, 3] == pytest.approx(0.75 * 0.8 + 0.25 * 0.1, abs=1e-5)
    assert scores[0, 5] == pytest.approx(0.75 * 0.1 + 0.25 * 0.6, abs=1e-5)
    assert scores[0, 18] == pytest.approx(1 - 0.625, abs=1e-5)  # not the mean of the members' 1 − max
    tta = LoadedEnsemble(read_ensemble(tmp_path / "e.yaml"), torch.device("cpu"), tta=True)
    assert np.allclose(tta(torch.zeros(1, 4, 32, 32, dtype=torch.uint16)), scores[:1], atol=1e-5)


def test_cell_image_weighting_uses_clean_cells_and_spares_11_and_18() -> None:
    scores = np.zeros((3, 19))
    scores[:, 0] = [0.9, 0.3, 0.6]
    scores[:, 11] = [0.5, 0.2, 0.1]
    scores[:, 18] = [0.1, 0.7, 0.4]
    border = np.array([1.0, 1.0, 0.001])  # the third cell is cut by the edge: not in the image mean
    outlier = np.ones(3)
    result = weight_scores(scores, border, outlier, WeightingSettings())
    image_mean = (0.9 + 0.3) / 2
    assert result[0, 0] == pytest.approx(0.7 * 0.9 + 0.3 * image_mean)
    assert result[1, 0] == pytest.approx(0.7 * 0.3 + 0.3 * image_mean)
    assert result[2, 0] == pytest.approx((0.7 * 0.6 + 0.3 * image_mean) * 0.001)
    assert result[1, 2] == pytest.approx(0.0)  # a class nobody has stays 0
    assert np.allclose(result[:2, [11, 18]], scores[:2, [11, 18]])
    assert np.allclose(result[2, [11, 18]], scores[2, [11, 18]] * 0.001)


def test_no_clean_cell_keeps_scores_and_factors_can_be_off() -> None:
    scores = np.full((2, 19), 0.4)
    scores[0, 0] = 0.8
    result = weight_scores(scores, np.array([0.5, 0.5]), np.array([0.001, 1.0]),
                         WeightingSettings(border_factor=False, outlier_factor=True))
    assert result[0, 0] == pytest.approx(0.8 * 0.001) and result[1, 0] == pytest.approx(0.4)
    assert not math.isnan(result.sum())


def test_a_compiled_member_keeps_its_embeddings(tmp_path: Path) -> None:
    """Embeddings are caught by a hook set on each member's head before it is compiled: torch.compile's
    graph capture (here with its eager backend, on the CPU) keeps it, with and without flips."""
    torch.manual_seed(0)
    model = create_model("efficientnet-b0", 18, tile_size=32)
    for _ in range(10):  # batch-norm statistics that let features through (a fresh B0's are ~1e-14)
        model(torch.rand(8, 4, 32, 32))
    save_checkpoint(tmp_path / "a.pt", make_checkpoint(model, ModelSpec("efficientnet-b0", 4, tuple(range(18)),
                                                                        TileSpec(32)), 1, [], {}))
    (tmp_path / "e.yaml").write_text("groups: [{members: [a.pt]}]\n")
    tiles = torch.randint(0, 255, (3, 4, 32, 32)).to(torch.uint16)
    for tta in (False, True):
        eager = LoadedEnsemble(read_ensemble(tmp_path / "e.yaml"), torch.device("cpu"), tta=tta)
        compiled = LoadedEnsemble(read_ensemble(tmp_path / "e.yaml"), torch.device("cpu"), tta=tta)
        member, spec, weight, group = compiled.models[0]
        compiled.models[0] = (torch.compile(member, backend="eager"), spec, weight, group)
        (expected, [expected_embedding]), (got, [embedding]) = eager.with_embeddings(tiles), compiled.with_embeddings(tiles)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_array_equal(embedding, expected_embedding)
        assert embedding.shape == (3, 1280) and np.abs(embedding).sum() > 0
