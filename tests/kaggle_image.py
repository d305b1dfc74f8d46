"""A stand-in for Kaggle's notebook image, made offline from this environment: a fresh virtual
environment that sees only the distributions that image holds (and what they require), linked from
this one's site-packages, so that hpasc and the packages the bundle ships must come from the
bundle's wheels. Also wheels of installed distributions, for a bundle built with no registry."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# What a Kaggle notebook runs on besides the libraries: pip to install the bundle, and Jupyter.
NOTEBOOK_TOOLS = ("pip", "ipykernel", "nbconvert")
LEFT_OUT_OF_WHEELS = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def required_closure(names: Iterable[str]) -> set[str]:
    """The installed distributions ``names`` and, transitively, what they require (with the extras
    that a requirement names, e.g. ``bleach[css]``)."""
    found: set[str] = set()
    done: set[tuple[str, str]] = set()
    pending = [(canonicalize_name(n), "") for n in names]
    while pending:
        name, extra = pending.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that this environment does not have
        found.add(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                child = canonicalize_name(requirement.name)
                pending += [(child, "")] + [(child, e) for e in requirement.extras]
    return found


def _top_level_entries(name: str) -> set[Path]:
    dist = metadata.distribution(name)
    site = Path(dist.locate_file(""))
    return {site / Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}


def image_environment(root: Path, distributions: Iterable[str], leave_out: Iterable[str] = ()) -> Path:
    """A virtual environment under ``root`` whose only packages are ``distributions`` with their
    requirements and :data:`NOTEBOOK_TOOLS` (``leave_out`` removed from those). Returns its python."""
    names = required_closure([*distributions, *NOTEBOOK_TOOLS]) - {canonicalize_name(n) for n in leave_out}
    site = root / "image-site"
    site.mkdir(parents=True)
    for name in sorted(names):
        for entry in _top_level_entries(name):
            if not (site / entry.name).exists():
                (site / entry.name).symlink_to(entry)
    venv = root / "venv"
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    # addsitedir, not a plain path: the image's own .pth files are processed as in a real install.
    Path(purelib, "kaggle-image.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n")
    return python


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def repack_wheel(distribution: str, out: Path) -> Path:
    """A wheel of the installed ``distribution`` (its files under site-packages, tags from its
    WHEEL file, a new RECORD), written into ``out``."""
    dist = metadata.distribution(distribution)
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    parts = [".".join(sorted({tag.split("-")[i] for tag in tags})) for i in range(3)]
    stem = f"{canonicalize_name(dist.metadata['Name']).replace('-', '_')}-{dist.version}"
    path = out / f"{stem}-{'-'.join(parts)}.whl"
    site = Path(dist.locate_file(""))
    files = sorted({str(f) for f in dist.files or []
                    if not str(f).startswith("..") and "__pycache__" not in str(f)
                    and Path(f).name not in LEFT_OUT_OF_WHEELS})
    info = next(f for f in files if f.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for name in files:
            data = (site / name).read_bytes()
            wheel.writestr(name, data)
            records.append(_record_line(name, data))
        records.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return path


def notebook_environment(home: Path, python: Path) -> dict[str, str]:
    """Environment variables under which ``jupyter nbconvert`` started by ``python`` finds only
    that environment's kernel and writes only under ``home``."""
    return {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(home),
            "JUPYTER_PATH": str(home / "share"), "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_PLATFORM_DIRS": "1", "IPYTHONDIR": str(home / "ipython"), "PYTHONPATH": "",
            "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull, "OMP_NUM_THREADS": "1"}
