"""Every benchmark script of bench/ still imports what it uses: its --help runs (the suite runs no
benchmark, so a moved or renamed name would otherwise surface only on the day someone measures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, run_script

SCRIPTS = sorted(path for path in [*(REPO / "bench").glob("*.py"), REPO / "bench" / "gpu" / "measure.py"]
                 if "__main__" in path.read_text())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO)))
def test_a_benchmark_script_starts(script: Path) -> None:
    result = run_script(script, "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_the_host_model_imports() -> None:
    """bench/host.py imports its runs (bench/host_model.py) only when it measures: import them here."""
    code = "import sys; sys.path[:0] = ['bench', 'bench/gpu', '.']; import host_model"
    result = run_script("-c", code, timeout=120)
    assert result.returncode == 0, result.stderr
