"""The shared CLI helper and every top-level script's command line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

from hpasc.commands import cli
from hpasc.core import runtime
from hpasc.core.errors import InputError
from tests.conftest import REPO, run_script

SCRIPTS = sorted(p.name for p in REPO.glob("*.py"))


def test_the_stage_scripts_exist() -> None:
    assert "download_publichpa.py" in SCRIPTS


@pytest.mark.parametrize("text, shard", [("0/1", runtime.Shard(0, 1)), ("3/4", runtime.Shard(3, 4))])
def test_parse_shard(text: str, shard: runtime.Shard) -> None:
    assert cli.parse_shard(text) == shard
    assert str(shard) == text


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1/0", "1", "a/b", "1/2/3"])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_shard(text)


def test_shards_partition_the_items() -> None:
    items = list(range(23))
    parts = [runtime.Shard(k, 5).select(items) for k in range(5)]
    assert sorted(sum(parts, [])) == items
    assert {len(p) for p in parts} == {4, 5}
    assert runtime.Shard(0, 1).suffix == "" and runtime.Shard(2, 5).suffix == "-shard2of5"


def test_parser_offers_only_chosen_flags() -> None:
    parser = cli.stage_parser("demo", flags=("workers", "shard"))
    args = parser.parse_args(["--workers", "3", "--shard", "1/2", "--no-progress"])
    options = cli.common_options(args)
    assert options == runtime.CommonOptions(workers=3, shard=runtime.Shard(1, 2), progress=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "cpu"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "0"])
    with pytest.raises(ValueError, match="unknown common flags"):
        cli.stage_parser("demo", flags=("gpu",))


def test_device_flag_and_resolution() -> None:
    import torch

    parser = cli.stage_parser("demo", flags=("device",))
    assert parser.parse_args(["--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu"])
    assert runtime.resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert runtime.resolve_device("auto") == "cuda"
    else:
        assert runtime.resolve_device("auto") == "cpu"
        with pytest.raises(InputError, match="CUDA is not available"):
            runtime.resolve_device("cuda")


def test_manifest(tmp_path: Path) -> None:
    args = argparse.Namespace(input=Path("a/b"), shard=runtime.Shard(1, 3), limit=None, label=[2, 5])
    path = runtime.write_manifest(tmp_path, "demo", vars(args), {"failed": 0})
    manifest = json.loads(path.read_text())
    assert path.name == "manifest-shard1of3.json"
    assert manifest["stage"] == "demo" and manifest["failed"] == 0
    assert manifest["arguments"] == {"input": "a/b", "shard": "1/3", "limit": None, "label": [2, 5]}
    assert "numpy" in manifest["packages"] and manifest["hpasc"]


def _parser_of(script: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(script[:-3], REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_explains_every_flag(script: str) -> None:
    parser = _parser_of(script)
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    for action in parser._actions:
        assert action.help, f"{script}: {action.option_strings or action.dest} has no help"
        for option in action.option_strings:
            assert option in result.stdout, f"{script} --help does not show {option}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_flag_is_a_usage_error(script: str) -> None:
    result = run_script(script, "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "usage:" in result.stderr and f"{script}: error:" in result.stderr


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_numeric_flags_refuse_what_is_not_a_finite_number(text: str) -> None:
    for parse in (cli.in_range(0.0, 1.0), cli.at_least(0.0, float), cli.in_range(None, 5.0)):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a number"):
            parse(text)


def test_ranges_keep_their_bounds() -> None:
    closed, open_ = cli.in_range(0.0, 1.0), cli.in_range(0.0, 1.0, open_low=True, open_high=True)
    assert closed("0") == 0.0 and closed("1") == 1.0 and open_("0.5") == 0.5
    for text in ("0", "1", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number in \(0, 1\), got"):
            open_(text)
    assert cli.at_least(2)("2") == 2
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 2, got 1"):
        cli.at_least(2)("1")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer, got '1.5'"):
        cli.at_least(2)("1.5")
    assert cli.class_index(range(18))("17") == 17
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer in \[0, 17\], got 18"):
        cli.class_index(range(18))("18")


@pytest.mark.parametrize("module, flags", [
    ("hpasc.commands.download", ["-i", "x.csv", "-o", "out", "--timeout", "nan"]),
    ("hpasc.commands.download", ["-i", "x.csv", "-o", "out", "--backoff", "inf"]),
    ("hpasc.commands.train", ["--lr", "nan"]),
    ("hpasc.commands.infer", ["-i", "t", "-e", "e.yaml", "--overlay-threshold", "nan"]),
    ("hpasc.commands.report", ["--cells", "c.parquet", "--threshold", "nan"]),
])
def test_nan_and_infinity_are_usage_errors(module: str, flags: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(flags)
    assert exited.value.code == 2
    assert "expected a number" in capsys.readouterr().err


@pytest.mark.parametrize("script, typed, meant", [("train_me.py", "--relable", "--relabel"),
                                                  ("train_me.py", "--tile_size", "--tile-size"),
                                                  ("infer.py", "--sample_submission", "--sample-submission")])
def test_a_mistyped_flag_names_the_one_it_meant(script: str, typed: str, meant: str) -> None:
    required = ("-i", "images", "-e", "e.yaml") if script == "infer.py" else ()
    result = run_script(script, *required, typed, "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"unrecognized arguments: {typed} x ({typed}: did you mean {meant}?)" in result.stderr


def test_a_flag_like_no_other_gets_no_guess() -> None:
    result = run_script("segmentator.py", "-i", "images", "-c", "cells", "--zzzzzz")
    assert result.returncode == 2 and "unrecognized arguments: --zzzzzz" in result.stderr
    assert "did you mean" not in result.stderr
