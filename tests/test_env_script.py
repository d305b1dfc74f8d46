"""scripts/env.sh with a virtual environment that two checkouts share through HPASC_VENV (issue 29,
item 7): sourcing the second checkout's script says in one line that the environment now runs it
instead of the first, and is silent when nothing changes. A real venv (its requirements taken as
installed by their stamp), real editable installs of two copies of this checkout."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO as ROOT, copy_checkout


def _checkout(where: Path) -> Path:
    return copy_checkout(where, "hpasc", "scripts", "pyproject.toml", "requirements.txt", "requirements-dev.txt",
                         "README.md")


def _source(checkout: Path, venv: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["HPASC_VENV"] = str(venv)
    return subprocess.run(["bash", "-c", f"source {checkout / 'scripts' / 'env.sh'} && "
                                         "python -c 'import hpasc; print(hpasc.__file__)'"],
                          env=env, cwd=checkout, capture_output=True, text=True, timeout=600)


def test_a_shared_environment_says_when_it_moves_to_another_checkout(tmp_path: Path) -> None:
    first, second = _checkout(tmp_path / "first"), _checkout(tmp_path / "second")
    venv = tmp_path / "venv"
    # This suite's own environment under it: the pinned requirements are there already.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    stamp = hashlib.sha1(b"".join((ROOT / name).read_bytes() for name in
                                  ("requirements.txt", "requirements-dev.txt", "pyproject.toml"))).hexdigest()
    (venv / ".requirements-stamp").write_text(stamp + "\n")

    made = _source(first, venv)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(first / "hpasc" / "__init__.py") and "note:" not in made.stderr
    moved = _source(second, venv)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == str(second / "hpasc" / "__init__.py")
    notes = [line for line in moved.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {venv} ran the checkout {first}; it now runs {second} (give each checkout its own "
                     "HPASC_VENV to keep both)"]
    again = _source(second, venv)
    assert again.returncode == 0 and "note:" not in again.stderr
