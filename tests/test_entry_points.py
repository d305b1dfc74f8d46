"""The installed commands: every stage and tool has a console script that calls its module's
``main(argv)``, each such ``main`` has one, and they run from any folder (the README's commands
install the project into .venv)."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
BIN = Path(sys.executable).parent


def _modules_with_main() -> set[str]:
    found = set()
    for path in (REPO / "hpasc").rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


def test_every_main_has_one_console_script_and_takes_argv() -> None:
    targets = [target.split(":") for target in SCRIPTS.values()]
    assert all(function == "main" for _, function in targets)
    assert sorted(module for module, _ in targets) == sorted(_modules_with_main())
    for module, _ in targets:
        main = importlib.import_module(module).main
        assert list(inspect.signature(main).parameters) == ["argv"], module


@pytest.mark.parametrize("name", ["hpasc-train", "hpasc-evaluate", "hpasc-synthetic", "hpasc-kaggle"])
def test_console_scripts_run_from_any_folder(name: str, tmp_path: Path) -> None:
    command = BIN / name
    assert command.is_file(), f"{command} is missing: install the project (scripts/test.sh does)"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(command), "--help"], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_the_umbrella_command_lists_every_command_in_pipeline_order(tmp_path: Path) -> None:
    """``hpasc --help`` names every hpasc-* console script, the stages in the order a run goes
    through them, and ``hpasc NAME --help`` is ``hpasc-NAME --help``."""
    from hpasc.commands.umbrella import COMMANDS, STAGES

    scripts = {name.removeprefix("hpasc-"): target.split(":")[0] for name, target in SCRIPTS.items() if name != "hpasc"}
    assert {name: f"hpasc.commands.{module}" for name, module in COMMANDS.items()} == scripts
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    listed = subprocess.run([str(BIN / "hpasc"), "--help"], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    positions = [listed.stdout.index(f"\n  {name} ") for name, _, _ in STAGES]
    assert positions == sorted(positions) and all(f"  {name} " in listed.stdout for name in COMMANDS)
    assert [name for name, _, _ in STAGES][:5] == ["download", "segment", "cut", "split", "train"]
    for name in ("segment", "labels"):
        umbrella = subprocess.run([str(BIN / "hpasc"), name, "--help"], cwd=tmp_path, capture_output=True,
                                  text=True, env=env, timeout=120)
        own = subprocess.run([str(BIN / f"hpasc-{name}"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                             env=env, timeout=120)
        assert umbrella.returncode == own.returncode == 0 and umbrella.stdout == own.stdout
    typo = subprocess.run([str(BIN / "hpasc"), "segmnet"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)
    assert typo.returncode == 2 and "unknown command 'segmnet' (did you mean segment?)" in typo.stderr


def test_python_dash_m_works_outside_the_repository(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "hpasc.commands.synthetic", "-o", tmp_path / "syn", "-n", "1",
                             "--size", "128", "--no-progress"], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "syn" / "truth" / "cells.csv").is_file()


def test_the_documented_layout_names_every_module() -> None:
    page = (REPO / "docs" / "development.md").read_text()
    layout = page[page.index("## Folder layout"):]
    names = {path.name for path in (REPO / "hpasc").rglob("*") if path.suffix in (".py", ".html", ".yaml")}
    missing = sorted(name for name in names - {"__init__.py"}
                     if name not in layout and name.removesuffix(".py") not in layout)
    assert not missing, f"docs/development.md's folder layout does not name {missing}"
    folders = {path.parent.name for path in (REPO / "hpasc").rglob("__init__.py")} - {"hpasc"}
    assert all(f"{folder}/" in layout for folder in folders)


# Every command that runs a network: segmentation's, a trained model's, or both.
MODEL_COMMANDS = ("hpasc-segment", "hpasc-infer", "hpasc-train", "hpasc-finetune", "hpasc-pseudo-label",
                  "hpasc-cell-eval", "hpasc-gradcam", "hpasc-label-tool")


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_every_command_that_runs_a_model_takes_precision(name: str, capsys) -> None:
    module, _ = SCRIPTS[name].split(":")
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(["--help"])
    assert exited.value.code == 0
    assert "--precision {float16,bfloat16,float32}" in capsys.readouterr().out


def test_the_model_commands_are_all_that_load_a_model() -> None:
    """A module that loads a checkpoint or segments belongs to one of MODEL_COMMANDS (a new tool that
    runs a model must take --precision too)."""
    users = {".".join(path.relative_to(REPO).with_suffix("").parts) for path in (REPO / "hpasc").rglob("*.py")
             if "ModelRunner.load(" in path.read_text() or "Segmenter(" in path.read_text()}
    covered = {"hpasc.stages.segment.stage", "hpasc.stages.infer.stage", "hpasc.stages.infer.ensemble",
               "hpasc.stages.train.finetune", "hpasc.tools.pseudo_label", "hpasc.tools.cell_eval",
               "hpasc.tools.gradcam",
               "hpasc.tools.label_tool"}
    assert users <= covered, sorted(users - covered)


@pytest.mark.parametrize("name, argv", [("hpasc-labels", ["--help"]), ("hpasc-labels", ["inspect", "--help"]),
                                        ("hpasc-cellstore", ["export", "--help"]), ("hpasc-pseudo-label", ["--help"])])
def test_help_names_the_installed_command(name: str, argv: list[str], capsys) -> None:
    """The usage line names the command a user types (it said `python -m hpasc.labels`)."""
    module, _ = SCRIPTS[name].split(":")
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name}")


# The package's floors, lowest first: a module imports only from its own floor or those below it.
FLOORS = (("core",), ("cells", "cellstore", "labels", "models", "segmentation", "submission"), ("stages",),
          ("tools",), ("commands",))


def _floor(module: str) -> int:
    package = module.split(".")[1] if module.count(".") else ""
    return next((level for level, names in enumerate(FLOORS) if package in names), 0)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpasc"):
            found |= {f"{node.module}.{alias.name}" if node.module == "hpasc" else node.module for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("hpasc")}
    return found


def test_every_module_imports_only_from_its_floor_or_below() -> None:
    """core under cells/cellstore/labels/models/segmentation/submission under stages under tools under commands:
    no arrow back up, lazy imports included (``hpasc`` itself, the version, counts as the floor)."""
    upward = []
    for path in (REPO / "hpasc").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module == "hpasc.__init__":
            continue  # open_cells, handed on lazily from the cell store
        upward += [f"{module} -> {name}" for name in _imports(path) if _floor(name) > _floor(module)]
    assert not upward, upward


def test_no_stage_imports_another_stage() -> None:
    """Stages share code through the floors below them (the split format, the cut, the Segmenter),
    never directly: a stage can change, or go, without another noticing."""
    crossing = []
    for path in (REPO / "hpasc" / "stages").rglob("*.py"):
        stage = path.relative_to(REPO / "hpasc" / "stages").parts[0]
        crossing += [f"{path.relative_to(REPO)} -> {name}" for name in _imports(path)
                     if name.startswith("hpasc.stages.") and name.split(".")[2] != stage]
    assert not crossing, crossing


def test_only_the_command_layer_parses_flags() -> None:
    """Every console script's main is in hpasc/commands/, and no other module imports argparse."""
    assert all(module.startswith("hpasc.commands.") for module in _modules_with_main())
    parsers = [str(path.relative_to(REPO)) for path in (REPO / "hpasc").rglob("*.py")
               if "commands" not in path.parts and "argparse" in {m.split(".")[0] for m in _stdlib_imports(path)}]
    assert not parsers, parsers


def _stdlib_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found
