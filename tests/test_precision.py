"""The --precision flag and the Precision rule, on the CPU (the CUDA runs are tests/test_cuda.py's)."""

from __future__ import annotations

import argparse

import pytest
import torch

from hpasc.commands import cli
from hpasc.models.precision import Precision
from tests.conftest import run_script


def parse(*argv: str) -> Precision:
    parser = argparse.ArgumentParser()
    cli.add_precision_flag(parser)
    return cli.precision_from_args(parser.parse_args(argv))


def test_precision_flag_values() -> None:
    assert parse() == Precision("float16")
    assert parse("--precision", "bfloat16") == Precision("bfloat16")
    assert parse("--no-amp") == Precision("float32")


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
