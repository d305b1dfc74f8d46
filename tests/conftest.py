"""Shared test helpers: repository paths and a real subprocess run of a script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HPA_REAL = REPO / "tests" / "data" / "hpa_samples"
"""Four real HPA images with HPA's cell masks, train.csv and sample_submission.csv (its README)."""
SAMPLE_LABELS = HPA_REAL / "labels"
"""Label lines of the 4th place's format for cells of two of the samples, written by the project."""


def run_script(*args: str | Path, cwd: Path = REPO, timeout: float = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS...`` (a top-level script or ``-m module``) and capture its output.

    ``-m`` modules are found from any ``cwd`` because the repository is put on PYTHONPATH.
    """
    script = args[0]
    if isinstance(script, str) and script.endswith(".py"):
        script = REPO / script
    command = [sys.executable, str(script), *map(str, args[1:])]
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def checkout_files(*paths: str) -> list[str]:
    """The checkout's files under ``paths`` (all without), as a clone of the working tree would hold
    them: tracked, or new and not ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *paths],
                            cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name and (REPO / name).is_file()]


def copy_checkout(where: Path, *paths: str) -> Path:
    """A copy of the checkout's files under ``paths`` (all without) in ``where``."""
    for name in checkout_files(*paths):
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, where / name)
    return where


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Poll ``condition`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The process failed with a single ``error: ...`` line naming ``fragments``, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def make_dataset(root: Path, images: int, size: int, tile: int, seed: int) -> Path:
    """A cell dataset ``root/dataset`` with its split, cut from ``root/syn`` synthetic images with
    their truth masks: hpasc.tools.synthetic → image_cutter.py → data_loader.py. Returns ``root``."""
    for args in (("-m", "hpasc.commands.synthetic", "-o", root / "syn", "-n", images, "--size", size, "--seed", seed,
                  "--no-progress"),
                 ("image_cutter.py", "-i", root / "syn", "-m", root / "syn" / "truth", "-n",
                  root / "syn" / "truth" / "nuclei", "-o", root / "dataset", "--size", tile, "--no-progress"),
                 ("data_loader.py", "-i", root / "dataset")):
        result = run_script(*args)
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="session")
def hpa_real() -> Path:
    return HPA_REAL


@pytest.fixture(scope="session")
def fourth_place_labels() -> Path:
    """The 4th place's published label folder (not shipped: fetched, or named by
    HPASC_4TH_PLACE_LABELS); the tests that need it are skipped, with the command, without it."""
    from hpasc.labels.fourth_place_source import ENV_VAR, absent_reason, find_fourth_place_labels

    folder = find_fourth_place_labels()
    if folder is None:
        pytest.skip(absent_reason())
    if not folder.is_dir():
        pytest.fail(f"{ENV_VAR}={folder} is not a folder")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """On a busy 2-core machine torch's intra-op threads can make a forward pass 10-100 times
    slower than one thread does; one thread keeps a test module's runtime steady."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """A DPN-UNet state_dict with random weights (the real weights cannot be downloaded here)."""
    import torch

    from hpasc.segmentation.network import DPNUNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_dpn_unet.pth"
    torch.save(DPNUNet().state_dict(), path)
    return path


# A /dev/shm of 1 MB in a mount namespace of its own, as a container's small default one (root, Linux).
SMALL_SHM = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$@"', "sh"]


def run_short_of_shared_memory(command: list[str], short: str | None,
                               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``command`` with room (``short`` None), under a 300 KB file-size limit ("file-size limit"),
    or with a 1 MB /dev/shm ("small tmpfs"; the test is skipped where no mount namespace can be made)."""
    import resource

    if short == "small tmpfs":
        try:
            usable = subprocess.run([*SMALL_SHM, "true"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            usable = False
        if not usable:
            pytest.skip("no mount namespace here (unshare needs root or user namespaces)")
        command = [*SMALL_SHM, *command]
    limit = 300 << 10 if short == "file-size limit" else None
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, preexec_fn=None
                          if limit is None else lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
