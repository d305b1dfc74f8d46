"""The Kaggle bundle (scripts/kaggle_bundle.sh, hpasc.tools.kaggle) and the submission notebook
(kaggle/submission.ipynb), run offline: the bundle of a small ensemble, its failures, and the
notebook's code on a folder laid out like Kaggle's competition data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from hpasc.cells.tile_spec import TileSpec
from hpasc.core.errors import InputError
from hpasc.core.weights_cache import sha256
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint
from hpasc.models.registry import create_model
from hpasc.models.spec import ModelSpec
from hpasc.tools.kaggle import (KAGGLE_MISSING, KAGGLE_PROVIDES, bundle_names, needed_scripts, notebook_code,
                                requirement_pins)
from tests.conftest import HPA_REAL, REPO, assert_one_line_error, run_script
from tests.kaggle_image import image_environment, notebook_environment, repack_wheel

BUNDLE_SCRIPT = REPO / "scripts" / "kaggle_bundle.sh"
NOTEBOOK = REPO / "kaggle" / "submission.ipynb"
SAMPLE_COLUMNS = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]


def read_manifest(path: Path) -> dict[str, tuple[str, int]]:
    """The manifest's entries: path → (sha256, size)."""
    entries = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            digest, size, name = line.split("  ", 2)
            entries[name] = (digest, int(size))
    return entries


def bundle(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BUNDLE_SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def small_checkpoint(path: Path, seed: int) -> None:
    """A checkpoint of an EfficientNet-B0 for 32 px tiles and outputs 0..17 (random weights)."""
    torch.manual_seed(seed)
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(32))
    model = create_model(spec.arch, len(spec.outputs), spec.in_channels, spec.tile_size)
    save_checkpoint(path, make_checkpoint(model, spec, 1, [], {}))


ENSEMBLE = {
    "groups": [
        {"weight": 0.2, "members": [{"checkpoint": "models/b0-bce-1.pt", "weight": 1.0},
                                    {"checkpoint": "finetuned/b0-bce-1.pt", "weight": 2.0}]},
        {"weight": 0.4, "members": [{"checkpoint": "finetuned/b0-bce-1.pt"}]},
    ],
    "postprocessing": {"cell_weight": 0.7, "image_weight": 0.3, "border_factor": True,
                       "outlier_factor": True},
}


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> Path:
    """``ensemble.yaml`` with two checkpoints of the same file name in different folders."""
    root = tmp_path_factory.mktemp("ensemble")
    small_checkpoint(root / "models" / "b0-bce-1.pt", seed=0)
    small_checkpoint(root / "finetuned" / "b0-bce-1.pt", seed=1)
    path = root / "ensemble.yaml"
    path.write_text(yaml.safe_dump(ENSEMBLE, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def built(ensemble: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bundle") / "hpasc-bundle"
    result = bundle(out, "-e", ensemble, "--no-requirement-wheels")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture(scope="module")
def installed(built: tuple[Path, subprocess.CompletedProcess], tmp_path_factory) -> Path:
    """The bundle's hpasc installed as the notebook installs it (no index), into a folder."""
    target = tmp_path_factory.mktemp("site")
    out, _ = built
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                             "--find-links", str(out / "wheels"), "--target", str(target), "hpasc"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return target


def test_bundle_holds_wheel_checkpoints_ensemble_and_manifest(
        built: tuple[Path, subprocess.CompletedProcess], ensemble: Path, installed: Path) -> None:
    out, result = built
    wheels = sorted(p.name for p in (out / "wheels").iterdir())
    assert len(wheels) == 1 and wheels[0].startswith("hpasc-") and wheels[0].endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(out / "wheels" / wheels[0]).namelist()
    assert "hpasc/tools/kaggle.py" in names and "hpasc/stages/train/sampling.yaml" in names
    assert (installed / "hpasc" / "stages" / "infer").is_dir()
    assert (installed / "hpasc" / "stages" / "train" / "sampling.yaml").is_file()
    assert (out / "infer.py").read_bytes() == (REPO / "infer.py").read_bytes()

    rewritten = yaml.safe_load((out / "ensemble.yaml").read_text())
    assert rewritten["postprocessing"] == ENSEMBLE["postprocessing"]
    assert [g["weight"] for g in rewritten["groups"]] == [0.2, 0.4]
    assert rewritten["groups"][0]["members"][1]["weight"] == 2.0
    original = [m["checkpoint"] for g in ENSEMBLE["groups"] for m in g["members"]]
    bundled = [m["checkpoint"] for g in rewritten["groups"] for m in g["members"]]
    assert len(set(bundled)) == 2  # same-named checkpoints of two folders stay apart
    for source, target in zip(original, bundled, strict=True):
        assert not Path(target).is_absolute() and target.startswith("models/")
        path = (out / target).resolve()
        assert path.is_relative_to(out.resolve()) and path.is_file()
        assert sha256(path) == sha256(ensemble.parent / source)

    manifest = read_manifest(out / "MANIFEST.txt")
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"MANIFEST.txt"}
    assert set(manifest) == files
    for name, (digest, size) in manifest.items():
        assert (out / name).stat().st_size == size and sha256(out / name) == digest

    assert not (out / "segmentation").exists() and "classical" in result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["hpasc-bundle"]  # no temporary folder left


def test_overwrite_and_segmentation_weights(ensemble: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "dpn_unet_nuclei_v1.pth").write_bytes(b"nuclei")
    assert bundle(out, "-e", ensemble, "--no-requirement-wheels", "--segmentation-weights",
                  weights).returncode == 0
    assert not (out / "segmentation").exists()  # one of the two files is not enough

    (weights / "dpn_unet_cell_3ch_v1.pth").write_bytes(b"cell")
    assert_one_line_error(bundle(out, "-e", ensemble, "--segmentation-weights", weights), "exists",
                          "--overwrite")
    (out / "stale.txt").write_text("from the first build")
    result = bundle(out, "-e", ensemble, "--no-requirement-wheels", "--segmentation-weights", weights,
                    "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "segmentation").iterdir()) == ["dpn_unet_cell_3ch_v1.pth",
                                                                        "dpn_unet_nuclei_v1.pth"]
    assert (out / "segmentation" / "dpn_unet_cell_3ch_v1.pth").read_bytes() == b"cell"
    assert not (out / "stale.txt").exists()
    assert "segmentation/dpn_unet_nuclei_v1.pth" in read_manifest(out / "MANIFEST.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "weights"]


def test_bundle_from_a_plain_member_list(ensemble: Path, tmp_path: Path) -> None:
    """``members: [path.pt]``, the form infer.py accepts and run_pipeline.sh writes."""
    shutil.copytree(ensemble.parent, tmp_path / "ens")
    plain = tmp_path / "ens" / "plain.yaml"
    plain.write_text("groups:\n  - members: [models/b0-bce-1.pt, finetuned/b0-bce-1.pt]\n")
    result = bundle(tmp_path / "out", "-e", plain, "--no-requirement-wheels")
    assert result.returncode == 0, result.stderr
    rewritten = yaml.safe_load((tmp_path / "out" / "ensemble.yaml").read_text())
    bundled = [m["checkpoint"] for g in rewritten["groups"] for m in g["members"]]
    assert bundled == ["models/b0-bce-1.pt", "models/finetuned/b0-bce-1.pt"]  # not models/models/... (item 13)
    for source, target in zip(["models/b0-bce-1.pt", "finetuned/b0-bce-1.pt"], bundled, strict=True):
        assert sha256(tmp_path / "out" / target) == sha256(tmp_path / "ens" / source)


def test_a_missing_checkpoint_leaves_no_bundle(ensemble: Path, tmp_path: Path) -> None:
    broken = json.loads(json.dumps(ENSEMBLE))
    broken["groups"][1]["members"].append({"checkpoint": "models/missing.pt"})
    shutil.copytree(ensemble.parent, tmp_path / "ens")
    (tmp_path / "ens" / "broken.json").write_text(json.dumps(broken))
    result = bundle(tmp_path / "out", "-e", tmp_path / "ens" / "broken.json")
    assert_one_line_error(result, "missing.pt", "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]


def test_a_corrupt_checkpoint_is_refused(ensemble: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(bundle(tmp_path / "out", "-e", tmp_path / "bad.pt"), "bad.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


@pytest.mark.parametrize("args, fragments", [
    ((), ("OUT is missing", "usage:")),
    (("out",), ("-e ENSEMBLE is missing",)),
    (("out", "-e", "nowhere.yaml"), ("nowhere.yaml", "does not exist")),
    (("out", "-e", "{ensemble}", "--segmentation-weights", "nowhere"), ("nowhere", "does not exist")),
    (("out", "-e", "{ensemble}", "--frobnicate"), ("unknown option --frobnicate",)),
    (("out", "-e", "{ensemble}", "--python-version", "eleven"), ("--python-version",)),
])
def test_bad_arguments_are_one_line_errors(args: tuple[str, ...], fragments: tuple[str, ...],
                                           ensemble: Path, tmp_path: Path) -> None:
    args = tuple(str(tmp_path / a) if a == "out" else a.format(ensemble=ensemble) for a in args)
    assert_one_line_error(bundle(*args), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_help_explains_every_flag() -> None:
    result = bundle("--help")
    assert result.returncode == 0
    for flag in ("--ensemble", "--segmentation-weights", "--no-requirement-wheels", "--python-version",
                 "--overwrite"):
        assert flag in result.stdout


def test_needed_scripts_follows_top_level_imports(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("import os\nimport helper\nfrom hpasc import cli\n")
    (tmp_path / "helper.py").write_text("from other.sub import x\n")
    (tmp_path / "other.py").write_text("import main\n")
    (tmp_path / "unused.py").write_text("")
    assert needed_scripts(tmp_path, "main.py") == ["helper.py", "main.py", "other.py"]
    assert needed_scripts(REPO, "infer.py")[0] == "infer.py"


def test_requirement_pins(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("Foo_Bar==1.2  # a comment\nzarr==9.9\n")
    (tmp_path / "dev.txt").write_text("-r base.txt\npytest==1.0\n")
    pins = requirement_pins(tmp_path / "dev.txt", ["foo-bar", "zarr", "pip"])
    assert pins[:2] == ["foo-bar==1.2", "zarr==9.9"] and pins[2].startswith("pip==")  # pip: installed
    with pytest.raises(InputError, match="no-such-package"):
        requirement_pins(tmp_path / "dev.txt", ["no-such-package"])
    assert len(requirement_pins(REPO / "requirements.txt")) >= 8  # every default name resolves here


def test_notebook_is_a_valid_nbformat4_notebook() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 4
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    cells = notebook["cells"]
    assert cells[0]["cell_type"] == "markdown"
    ids = [cell["id"] for cell in cells]
    assert len(set(ids)) == len(ids)
    for cell in cells:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["metadata"], dict)
        assert isinstance(cell["source"], list) and all(isinstance(line, str) for line in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    code = notebook_code(NOTEBOOK)
    compile(code, str(NOTEBOOK), "exec")
    assert not [line for line in code.splitlines() if line.lstrip().startswith(("!", "%"))]  # no magics
    assert "http" not in code and "--no-index" in code  # no network
    for default in ("'/kaggle/input/hpasc-bundle'", "'/kaggle/input/hpa-single-cell-image-classification'",
                    "'/kaggle/working/submission.csv'", "HPASC_BUNDLE", "HPASC_DATA", "HPASC_OUT",
                    "HPASC_SKIP_INSTALL"):
        assert default in code


def kaggle_data(root: Path) -> list[str]:
    """``root/test`` with three synthetic images in the Kaggle layout and ``root/sample_submission.csv``
    listing them (not in file-name order), in the real sample's columns. Returns the IDs in order."""
    synthetic = root / "synthetic"
    result = run_script("-m", "hpasc.commands.synthetic", "-o", synthetic, "-n", 3, "--size", 256, "--seed", 4,
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    (root / "test").mkdir()
    for png in synthetic.glob("*_*.png"):
        shutil.copy(png, root / "test" / png.name)
    ids = sorted({p.name.rsplit("_", 1)[0] for p in (root / "test").iterdir()}, reverse=True)
    assert len(ids) == 3
    columns = pd.read_csv(HPA_REAL / "sample_submission.csv", nrows=1).columns.tolist()
    assert columns == SAMPLE_COLUMNS
    sample = pd.DataFrame({"ID": ids, "ImageWidth": 256, "ImageHeight": 256,
                           "PredictionString": "0 1 eNoLCAgIMAEABJkBdQ=="})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return ids


@pytest.fixture(scope="module")
def kaggle_bundle(ensemble: Path, tmp_path_factory) -> Path:
    """A bundle with its requirement wheels, taken (offline) from wheels of this environment's
    installed packages, as the registry would give them."""
    root = tmp_path_factory.mktemp("kaggle-bundle")
    wheelhouse = root / "wheelhouse"
    wheelhouse.mkdir()
    for name in KAGGLE_MISSING:
        repack_wheel(name, wheelhouse)
    out = root / "hpasc-bundle"
    result = bundle(out, "-e", ensemble, "--wheels-from", wheelhouse)
    assert result.returncode == 0, result.stderr
    return out


def execute_notebook(python: Path, bundle_folder: Path, root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """``jupyter nbconvert --execute`` (as ``python -m nbconvert``) of the notebook, as Kaggle runs it, by the image's ``python``
    on the competition's layout under ``root`` (offline: pip may use no index). Returns the run and
    the submission's path."""
    submission = root / "working" / "submission.csv"
    env = {**notebook_environment(root / "home", python), "HPASC_BUNDLE": str(bundle_folder),
           "HPASC_DATA": str(root / "data"), "HPASC_OUT": str(submission)}
    result = subprocess.run([str(python), "-m", "nbconvert", "--to", "notebook", "--execute",
                             "--ExecutePreprocessor.timeout=600", "--output-dir", str(root / "executed"),
                             str(NOTEBOOK)], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    return result, submission


def test_notebook_runs_offline_in_a_kaggle_shaped_image(kaggle_bundle: Path, tmp_path: Path) -> None:
    assert (REPO / "infer.py").is_file(), "infer.py is missing from the repository"
    shipped = {p.name.split("-")[0] for p in (kaggle_bundle / "wheels").glob("*.whl")}
    assert len(shipped) == len(KAGGLE_MISSING) + 1 and "hpasc" in shipped
    python = image_environment(tmp_path / "image", KAGGLE_PROVIDES.values())
    for module in ("hpasc", "zarr", "efficientnet_pytorch"):  # not in the image: from the bundle's wheels only
        assert subprocess.run([str(python), "-c", f"import {module}"], cwd=tmp_path, capture_output=True,
                              env=notebook_environment(tmp_path, python), timeout=120).returncode != 0
    ids = kaggle_data(tmp_path / "data")
    result, submission = execute_notebook(python, kaggle_bundle, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    executed = json.loads((tmp_path / "executed" / NOTEBOOK.name).read_text())
    printed = "".join("".join(output.get("text", [])) for cell in executed["cells"] if cell["cell_type"] == "code"
                      for output in cell["outputs"])
    assert "Successfully installed" in printed and "hpasc" in printed
    frame = pd.read_csv(submission)
    assert frame.columns.tolist() == SAMPLE_COLUMNS
    assert frame["ID"].tolist() == ids
    assert (frame["ImageWidth"] == 256).all() and (frame["ImageHeight"] == 256).all()
    assert frame["PredictionString"].str.len().gt(0).all()


def test_notebook_refuses_an_image_without_what_the_bundle_expects(kaggle_bundle: Path, tmp_path: Path) -> None:
    python = image_environment(tmp_path / "image", KAGGLE_PROVIDES.values(), leave_out=["opencv-python-headless"])
    kaggle_data(tmp_path / "data")
    result, submission = execute_notebook(python, kaggle_bundle, tmp_path)
    assert result.returncode != 0
    assert "error: this Python lacks cv2 (opencv-python-headless), which the bundle takes from Kaggle's image" in (
        result.stderr)
    assert "ModuleNotFoundError" not in result.stderr and "Successfully installed" not in result.stderr
    assert not submission.exists()


def test_bundle_says_what_it_expects_of_the_image(built: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = built
    lines = [line.split() for line in (out / "EXPECTS.txt").read_text().splitlines() if not line.startswith("#")]
    assert dict(lines) == KAGGLE_PROVIDES and "EXPECTS.txt" in read_manifest(out / "MANIFEST.txt")
    assert not set(KAGGLE_PROVIDES.values()) & set(KAGGLE_MISSING)


def test_bundle_wheel_declares_its_requirements(built: tuple[Path, subprocess.CompletedProcess],
                                                tmp_path: Path) -> None:
    """Outside Kaggle's image, pip refuses the wheel where its requirements cannot be had, instead
    of installing an hpasc that fails on its first import."""
    out, _ = built
    wheel = next((out / "wheels").glob("hpasc-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        meta = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    declared = {line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")}
    assert {"torch==2.14.1", "opencv-python-headless==5.0.0.93", "zarr==3.1.6"} <= declared
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--ignore-installed",
                             "--find-links", str(out / "wheels"), "hpasc"], capture_output=True, text=True,
                            env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""}, timeout=300)
    assert result.returncode != 0 and "No matching distribution found for" in result.stderr


def test_bundle_names_keep_runs_apart_without_nesting_models() -> None:
    base = Path("/runs")
    assert bundle_names([base / "models" / "a.pt", base / "finetuned" / "a.pt"]) == {
        base / "models" / "a.pt": "models/a.pt", base / "finetuned" / "a.pt": "models/finetuned/a.pt"}
    clash = [base / "models" / "finetuned" / "a.pt", base / "finetuned" / "a.pt"]
    assert sorted(bundle_names(clash).values()) == ["models/finetuned/a.pt", "models/models/finetuned/a.pt"]
