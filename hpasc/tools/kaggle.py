"""Helpers of the Kaggle bundle (``scripts/kaggle_bundle.sh``) and of its notebook.

The bundle is an offline folder uploaded as a Kaggle dataset: wheels, ``infer.py``, the ensemble's
checkpoints under ``models/`` with an ``ensemble.yaml`` that names them relative to the bundle,
optional HPA segmentation weights and a ``MANIFEST.txt``. The shell script calls the subcommands
of ``hpasc-kaggle`` (:mod:`hpasc.commands.kaggle`)::

    models -e ENSEMBLE -o DIR   copy the checkpoints to DIR/models/, write DIR/ensemble.yaml
    pins REQUIREMENTS [NAME...] print NAME==VERSION of the packages to ship as wheels
    scripts REPO SCRIPT         print the top-level scripts SCRIPT needs (itself included)
    expects DIR                 write DIR/EXPECTS.txt: the modules the bundle takes from Kaggle's image
    manifest DIR                write DIR/MANIFEST.txt: sha256, size and path of every file
    notebook-code NOTEBOOK      print the code cells of a notebook as one script

Each exits with one ``error: ...`` line and status 2 on unusable input.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath

from hpasc.core.errors import InputError
from hpasc.core.weights_cache import sha256
from hpasc.stages.infer.ensemble_file import read_ensemble, write_ensemble

# Pinned requirements that Kaggle's Python image lacks (or may hold at another version), with the
# dependencies of theirs that it lacks too: the bundle ships their wheels. timm is shipped at our
# pin: a timm backbone's state_dict keys follow its version.
KAGGLE_MISSING = ("efficientnet-pytorch", "timm", "pycocotools", "zarr", "numcodecs", "donfig", "google-crc32c",
                  "imagecodecs", "tifffile", "iterative-stratification", "grad-cam", "ttach")
# What the bundle takes from Kaggle's image instead (module: the distribution that brings it, as
# our requirements name it): infer.py's imports outside the shipped wheels, and what those need.
KAGGLE_PROVIDES = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "pandas": "pandas", "scipy": "scipy",
    "cv2": "opencv-python-headless", "skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "pillow",
    "tqdm": "tqdm", "yaml": "PyYAML", "matplotlib": "matplotlib", "huggingface_hub": "huggingface-hub",
    "safetensors": "safetensors",
}
MODELS = "models"
ENSEMBLE = "ensemble.yaml"
MANIFEST = "MANIFEST.txt"
EXPECTS = "EXPECTS.txt"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bundle_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Where each checkpoint goes in the bundle: ``models/`` + its path relative to the folder that
    all of them share, so that same-named files of different runs stay apart (a leading ``models/``
    of that path not repeated)."""
    unique = sorted(set(paths))
    common = Path(os.path.commonpath([p.parent for p in unique]))
    relative = {p: p.relative_to(common).parts for p in unique}
    # A run's own models/ folder is not nested in the bundle's (models/models/...), unless two
    # checkpoints would then share a name.
    shorter = {p: parts[1:] if parts[0] == MODELS and len(parts) > 1 else parts for p, parts in relative.items()}
    chosen = shorter if len(set(shorter.values())) == len(shorter) else relative
    return {p: str(PurePosixPath(MODELS, *parts)) for p, parts in chosen.items()}


def _validate_checkpoint(path: Path) -> None:
    from hpasc.models.checkpoint import load_checkpoint  # torch: only when a bundle is built

    load_checkpoint(path)


def bundle_models(ensemble_file: Path, out: Path, validate: bool = True) -> list[str]:
    """Copy the checkpoints of ``ensemble_file`` (or the checkpoint ``ensemble_file`` itself) into
    ``out/models/`` and write ``out/ensemble.yaml`` naming them relative to ``out``. Every checkpoint
    is checked (exists, and with ``validate`` loads as an hpasc checkpoint) before anything is
    copied. Returns the bundle paths written."""
    ensemble = read_ensemble(ensemble_file)
    if validate:
        for path in ensemble.checkpoints:
            _validate_checkpoint(path)
    names = bundle_names(ensemble.checkpoints)
    for path, name in names.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    header = (f"# Written by scripts/kaggle_bundle.sh from {ensemble_file.name}; checkpoint paths are "
              f"relative to this file's folder.\n")
    write_ensemble(out / ENSEMBLE, ensemble.moved({path: out / name for path, name in names.items()}), header)
    return sorted(names.values())


def requirement_pins(requirements: Path, names: Sequence[str] = KAGGLE_MISSING) -> list[str]:
    """``name==version`` for each of ``names``: the pin in ``requirements`` (``-r`` includes
    followed), else the version installed here; InputError if neither exists."""
    pins: dict[str, str] = {}

    def read(path: Path) -> None:
        if not path.is_file():
            raise InputError(f"{path}: requirements file does not exist")
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r "):
                read(path.parent / line[3:].strip())
            elif (match := re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", line)):
                pins[_normalise(match.group(1))] = match.group(2)

    read(requirements)
    result = []
    for name in names:
        version = pins.get(_normalise(name))
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                raise InputError(f"{name} is neither pinned in {requirements} nor installed") from None
        result.append(f"{name}=={version}")
    return result


def needed_scripts(repo: Path, script: str) -> list[str]:
    """``script`` and the top-level ``*.py`` files of ``repo`` that it imports, transitively."""
    found: list[str] = []
    pending = [script]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = repo / name
        if not path.is_file():
            raise InputError(f"{path} does not exist")
        found.append(name)
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError as exc:
            raise InputError(f"{path}: not valid Python ({exc.msg}, line {exc.lineno})") from None
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                candidate = f"{module.split('.')[0]}.py"
                if (repo / candidate).is_file():
                    pending.append(candidate)
    return sorted(found)


def write_expectations(folder: Path) -> Path:
    """``folder/EXPECTS.txt``: ``module  distribution`` of what the bundle takes from Kaggle's image,
    which the notebook checks before it installs anything."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    lines = ["# module  distribution: what this bundle takes from Kaggle's Python image (docs/kaggle.md)"]
    lines += [f"{module}  {distribution}" for module, distribution in KAGGLE_PROVIDES.items()]
    path = folder / EXPECTS
    path.write_text("\n".join(lines) + "\n")
    return path


def write_manifest(folder: Path) -> Path:
    """``folder/MANIFEST.txt``: a header, then ``sha256  size  path`` for every other file, sorted."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)
    lines = ["# sha256  bytes  path (relative to this folder)"]
    lines += [f"{sha256(p)}  {p.stat().st_size}  {p.relative_to(folder).as_posix()}" for p in files]
    manifest = folder / MANIFEST
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def notebook_code(path: Path) -> str:
    """The code cells of the notebook at ``path``, joined into one script."""
    try:
        notebook = json.loads(path.read_text())
        cells = notebook["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable notebook ({exc})") from None
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in cells if c.get("cell_type") == "code"]
    return "\n\n".join(s.rstrip("\n") for s in sources) + "\n"
