"""scripts/install_requirements.sh with a real pip in a new virtual environment, against two local
package indexes (file://, no network): the default one holds a "CUDA" torch, the other a CPU build
(issue 29, item 6). Its wheels are tiny stand-ins made here, named and versioned like the real ones."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _wheel(index: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A pure-Python wheel of an importable package ``name`` in a PEP 503 index folder."""
    folder = index / name.replace("_", "-")  # the index's normalised project name
    folder.mkdir(parents=True, exist_ok=True)
    filename = f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / filename, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    links = "".join(f'<a href="{p.name}">{p.name}</a>\n' for p in sorted(folder.glob("*.whl")))
    (folder / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("indexes")
    default, cpu = root / "default", root / "cpu"
    for name, version in (("torch", "2.14.1"), ("torchvision", "0.29.1")):
        _wheel(default, name, version)
        _wheel(cpu, name, f"{version}+cpu")
    _wheel(default, "needs_torch", "1.0", requires=("torch>=2",))  # a package that pulls in a torch
    return default, cpu


def _install(tmp_path: Path, indexes: tuple[Path, Path], torch_index: Path | None) -> dict[str, str]:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    requirements = tmp_path / "requirements.txt"
    (tmp_path / "base.txt").write_text("torch==2.14.1\ntorchvision==0.29.1\n")
    requirements.write_text("-r base.txt\nneeds_torch==1.0\n")
    # Only these indexes: no pip configuration of the machine's (its extra indexes, a cap on torch).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "HPASC_"))}
    env |= {"PYTHON": str(python), "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": indexes[0].as_uri(),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    if torch_index is not None:
        env["HPASC_TORCH_INDEX"] = torch_index.as_uri()
    result = subprocess.run(["bash", ROOT / "scripts" / "install_requirements.sh", requirements], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    shown = subprocess.run([python, "-c", "import torch, torchvision, needs_torch; "
                                          "print(torch.__version__, torchvision.__version__)"],
                           capture_output=True, text=True, check=True)
    return dict(zip(("torch", "torchvision"), shown.stdout.split()))


def test_the_default_index_gives_the_pinned_torch(tmp_path: Path, indexes: tuple[Path, Path]) -> None:
    assert _install(tmp_path, indexes, None) == {"torch": "2.14.1", "torchvision": "0.29.1"}


def test_hpasc_torch_index_installs_the_pins_from_that_index_and_keeps_them(tmp_path: Path,
                                                                           indexes: tuple[Path, Path]) -> None:
    # needs_torch, from the default index, would otherwise be satisfied by the default torch.
    installed = _install(tmp_path, indexes, indexes[1])
    assert installed == {"torch": "2.14.1+cpu", "torchvision": "0.29.1+cpu"}
