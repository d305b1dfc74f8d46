"""segmentator.py end to end, as real subprocesses, on synthetic images."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hpasc.core.image_folder import scan_images
from hpasc.core.images import read_label_image
from hpasc.submission.matching import match_instances
from tests.conftest import REPO, assert_one_line_error, run_script, run_short_of_shared_memory


def segmentator(*args: str | Path, cwd: Path, cache: Path):
    env = {**os.environ, "HPASC_CACHE": str(cache)}
    return run_script(REPO / "segmentator.py", *args, "--no-progress", cwd=cwd, env=env)


@pytest.fixture(scope="module")
def kaggle_layout(tmp_path_factory) -> Path:
    """``train/`` with three synthetic 512² images (and their truth) in a fresh folder."""
    root = tmp_path_factory.mktemp("kaggle")
    made = run_script("-m", "hpasc.commands.synthetic", "-o", root / "train", "-n", "3", "--size", "512",
                      "--seed", "5", "--no-progress")
    assert made.returncode == 0, made.stderr
    return root


def test_seed_command_line_runs_with_the_classical_fallback(kaggle_layout: Path, tmp_path: Path):
    work = tmp_path / "work"
    shutil.copytree(kaggle_layout / "train", work / "train")
    result = segmentator("-i", "train", "-n", "train_nuclei", "-c", "train_cells", "-b", "128",
                         cwd=work, cache=tmp_path / "no-weights")

    assert result.returncode == 0, result.stderr
    assert "using the classical backend" in result.stderr
    truth = work / "train" / "truth"
    scores = []
    for image_id in scan_images(work / "train").ids:
        cells = read_label_image(work / "train_cells" / f"{image_id}.png")
        nuclei = read_label_image(work / "train_nuclei" / f"{image_id}.png")
        assert cells.dtype == np.uint16 and cells.shape == (512, 512)
        assert set(np.unique(nuclei)) <= set(np.unique(cells))
        inside = nuclei > 0
        np.testing.assert_array_equal(cells[inside], nuclei[inside])  # nucleus id = its cell's id
        scores.append(match_instances(read_label_image(truth / f"{image_id}.png"), cells).f1)
    assert np.mean(scores) > 0.8
    manifest = json.loads((work / "train_cells" / "manifest.json").read_text())
    assert manifest["backend"] == "classical" and manifest["failed"] == 0
    assert (work / "train_nuclei" / "manifest.json").is_file()

    stamps = {p: p.stat().st_mtime_ns for p in (work / "train_cells").glob("*.png")}
    again = segmentator("-i", "train", "-n", "train_nuclei", "-c", "train_cells", cwd=work,
                        cache=tmp_path / "no-weights")
    assert again.returncode == 0
    assert again.stderr.count("already segmented, skipped") == 1  # one line for all
    assert "3 image(s) already segmented, skipped" in again.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in (work / "train_cells").glob("*.png")}


def test_bad_images_are_logged_and_the_rest_finish(kaggle_layout: Path, tmp_path: Path):
    images = tmp_path / "images"
    shutil.copytree(kaggle_layout / "train", images, ignore=shutil.ignore_patterns("truth", "*.csv"))
    ids = scan_images(images).ids
    (images / f"{ids[0]}_yellow.png").unlink()
    (images / f"{ids[1]}_red.png").write_bytes(b"\x89PNG broken")

    result = segmentator("-i", images, "-c", tmp_path / "cells", "--backend", "classical",
                         "--workers", "2", cwd=tmp_path, cache=tmp_path)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{ids[0]}: failed: missing channel(s) yellow" in result.stderr
    assert f"{ids[1]}: failed:" in result.stderr and "corrupt or truncated" in result.stderr
    assert sorted(p.stem for p in (tmp_path / "cells").glob("*.png")) == [ids[2]]
    assert not [p for p in (tmp_path / "cells").iterdir() if ".tmp" in p.name]


def test_unusable_input_is_a_one_line_error(tmp_path: Path):
    assert_one_line_error(
        segmentator("-i", tmp_path / "absent", "-c", tmp_path / "c", cwd=tmp_path, cache=tmp_path),
        "does not exist")
    missing = tmp_path / "missing.pth"
    assert_one_line_error(
        segmentator("-i", tmp_path, "-c", tmp_path / "c", "--backend", "hpa", "--nuclei-model",
                    missing, "--cell-model", missing, cwd=tmp_path, cache=tmp_path),
        str(missing))


def test_hpa_backend_runs_end_to_end(tmp_path: Path, random_weights: Path):
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "images", "-n", "2",
                      "--size", "200x300", "--seed", "1", "--no-progress")
    assert made.returncode == 0, made.stderr

    result = segmentator("-i", tmp_path / "images", "-c", tmp_path / "cells", "-n",
                         tmp_path / "nuclei", "--backend", "hpa", "--nuclei-model", random_weights,
                         "--cell-model", random_weights, "-b", "2", "--device", "cpu",
                         "--workers", "1", cwd=tmp_path, cache=tmp_path)

    assert result.returncode == 0, result.stderr
    for image_id in scan_images(tmp_path / "images").ids:
        for folder in ("cells", "nuclei"):
            labels = read_label_image(tmp_path / folder / f"{image_id}.png")
            assert labels.shape == (200, 300) and labels.dtype == np.uint16
    manifest = json.loads((tmp_path / "cells" / "manifest.json").read_text())
    assert manifest["backend"] == "hpa"


def test_public_api_names() -> None:
    import hpasc.segmentation as segmentation
    from hpasc.segmentation.labelling import label_cell
    from hpasc.segmentation.weights import load_hpa_model

    assert segmentation.label_cell is label_cell and segmentation.load_hpa_model is load_hpa_model
    assert set(segmentation.__all__) >= {"DPNUNet", "segment_classical", "Segmenter"}
    with pytest.raises(AttributeError):
        segmentation.no_such_name  # noqa: B018


def test_every_backend_the_flag_offers_is_a_backend_class() -> None:
    """The Segmenter picks a Backend by name from one table; --backend offers exactly its names."""
    from hpasc.segmentation.segmenter import BACKENDS, ClassicalBackend, HpaBackend
    from hpasc.segmentation.settings import BACKENDS as FLAG_CHOICES

    assert set(BACKENDS) == set(FLAG_CHOICES) - {"auto"}
    assert BACKENDS["hpa"] is HpaBackend and BACKENDS["classical"] is ClassicalBackend
    assert HpaBackend.uses_label_scale and not ClassicalBackend.uses_label_scale


@pytest.mark.parametrize("short", ["file-size limit", "small tmpfs"])
def test_hpa_backend_short_of_shared_memory_writes_the_same_masks(tmp_path: Path, random_weights: Path,
                                                                    short: str) -> None:
    """HPA's pipeline with no room for its slots (inputs and maps travel another way) writes the
    masks it writes with room, with one warning and no resource-tracker traceback (issue 38)."""
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "images", "-n", "2",
                      "--size", "200x300", "--seed", "1", "--no-progress")
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "HPASC_CACHE": str(tmp_path)}
    for name in ("room", "short"):
        command = [sys.executable, str(REPO / "segmentator.py"), "-i", str(tmp_path / "images"), "-c",
                   str(tmp_path / name), "--backend", "hpa", "--nuclei-model", str(random_weights), "--cell-model",
                   str(random_weights), "-b", "2", "--device", "cpu", "--workers", "2", "--no-progress"]
        result = run_short_of_shared_memory(command, short if name == "short" else None, env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "KeyError" not in result.stderr, result.stderr
        assert ("shared memory is short" in result.stderr) is (name == "short")
    for path in sorted((tmp_path / "room").glob("*.png")):
        np.testing.assert_array_equal(read_label_image(tmp_path / "short" / path.name), read_label_image(path))
    assert len(list((tmp_path / "room").glob("*.png"))) == 2
