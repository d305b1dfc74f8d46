"""The Dockerfile and its check (scripts/docker_check.sh, which builds and runs the image where a
Docker engine runs; the suite does not): the torch the image gets is the one the suite runs on,
and the check script's arguments."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO, assert_one_line_error

CHECK = REPO / "scripts" / "docker_check.sh"


def pinned(name: str) -> str:
    match = re.search(rf"^{name}==(\S+)", (REPO / "requirements.txt").read_text(), flags=re.M)
    assert match, name
    return match.group(1)


def default_base() -> str:
    match = re.search(r"^ARG BASE=(\S+)$", (REPO / "Dockerfile").read_text(), flags=re.M)
    assert match
    return match.group(1)


def base_mismatch(base: str, torch: str) -> str | None:
    """Why the image built on ``base`` would not run ``torch``, or None. A PyTorch base keeps its own
    torch (make_venv.sh), so its tag must name that torch; a plain Python 3.11 base gets the pinned
    torch from requirements.txt."""
    pytorch = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-\S+", base)
    if pytorch:
        kept = pytorch.group(1)
        return None if kept == torch.split("+")[0] else f"{base} keeps torch {kept}; the suite runs {torch}"
    if re.fullmatch(r"python:3\.11(\.\d+)?(-slim)?-bookworm", base):
        return None
    return f"{base}: neither a Python 3.11 image nor a PyTorch image whose torch is known"


def test_the_default_base_gives_the_tested_torch() -> None:
    assert base_mismatch(default_base(), pinned("torch")) is None
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "RUN scripts/make_venv.sh /opt/venv requirements.txt" in dockerfile
    assert "--keep-torch" not in dockerfile  # torch is kept only where the base brings one


def test_a_base_that_drifts_from_the_tested_torch_is_caught() -> None:
    assert "keeps torch 2.5.1" in base_mismatch("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", pinned("torch"))
    assert base_mismatch(f"pytorch/pytorch:{pinned('torch')}-cuda13.0-cudnn9-runtime", pinned("torch")) is None
    assert base_mismatch("ubuntu:24.04", pinned("torch")) is not None


def test_the_image_holds_what_the_build_needs() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for needed in ("requirements.txt", "scripts/make_venv.sh", "scripts/install_requirements.sh", "pyproject.toml",
                   "infer.py"):
        assert (REPO / needed).is_file() and not any(Path(needed).match(p) for p in ignored)
    assert ".venv" in ignored and ".git" in ignored


def test_check_script_help_and_bad_arguments() -> None:
    shown = subprocess.run(["bash", str(CHECK), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--keep-image" in shown.stdout
    for args in (["--bogus"], ["--work"]):
        result = subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, timeout=60)
        assert_one_line_error(result)


def test_gpu_and_cpu_use_are_documented() -> None:
    page = (REPO / "docs" / "performance.md").read_text()
    assert "docker run --rm --gpus all" in page and "scripts/docker_check.sh" in page
