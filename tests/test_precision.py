"""The --precision flag and the Precision rule, on the CPU (the CUDA runs are tests/test_cuda.py's)."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from hpasc.commands import cli
from hpasc.models.precision import Precision
from tests.conftest import run_script


def parse(*argv: str, compiles: bool = False) -> Precision:
    parser = argparse.ArgumentParser()
    cli.add_precision_flag(parser, compiles=compiles)
    return cli.precision_from_args(parser.parse_args(argv))


def test_precision_flag_values() -> None:
    assert parse() == Precision("float16", compile=False)
    assert parse("--precision", "bfloat16") == Precision("bfloat16", compile=False)
    assert parse("--no-amp") == Precision("float32", compile=False)
    assert parse(compiles=True) == Precision("float16", compile=True)
    assert parse("--no-compile", "--no-amp", compiles=True) == Precision("float32", compile=False)


def test_compile_applies_on_cuda_only_and_keeps_its_kernels_in_the_hpasc_cache(monkeypatch, tmp_path) -> None:
    """torch.compile is lazy (nothing compiles before the first call), so the rule shows on the CPU."""
    monkeypatch.setenv("HPASC_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    model = torch.nn.Linear(2, 2)
    assert Precision().compiled(model, "cpu") is model  # the CPU's runs stay exact
    assert Precision(compile=False).compiled(model, "cuda") is model
    compiled = Precision().compiled(model, "cuda")
    assert compiled is not model and compiled._orig_mod is model
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torch-compile")


@pytest.mark.parametrize("script, flag", [("train_me.py", True), ("infer.py", True), ("finetuner.py", True),
                                          ("segmentator.py", False)])
def test_commands_that_score_cells_offer_no_compile(script: str, flag: bool) -> None:
    result = run_script(script, "--help")
    assert result.returncode == 0 and ("--no-compile" in result.stdout) is flag


@pytest.mark.parametrize("argv", [("--precision", "float64"), ("--precision", "bfloat16", "--no-amp")])
def test_precision_flag_rejects(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="float16, bfloat16, float32"):
        Precision("half")


@pytest.mark.parametrize("dtype, scaler", [("float16", True), ("bfloat16", False), ("float32", False)])
def test_scaler_and_layout_rules(dtype: str, scaler: bool) -> None:
    cuda = torch.device("cuda")
    assert Precision(dtype).needs_scaler(cuda) is scaler
    assert Precision(dtype).memory_format(cuda) == torch.channels_last
    assert Precision(dtype, channels_last=False).memory_format(cuda) == torch.contiguous_format
    # the CPU always runs float32 in the default layout
    assert not Precision(dtype).needs_scaler("cpu")
    assert Precision(dtype).memory_format("cpu") == torch.contiguous_format
    with Precision(dtype).autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("script", ["train_me.py", "infer.py", "segmentator.py", "finetuner.py"])
def test_scripts_refuse_both_precision_flags(script: str) -> None:
    result = run_script(script, "--precision", "bfloat16", "--no-amp")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not allowed with argument" in result.stderr
