"""infer.py --cells-out: one row per cell, equal to the submission's cells and confidences; the
embeddings have each member's feature width and one row per cell; the .h5ad file holds exactly the
Parquet table's values and scanpy reads it; the top calls; bad table options are one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from hpasc.core.classes import CLASS_NAMES, NEGATIVE, NUM_CLASSES
from hpasc.stages.infer.cell_table import CONFIDENCES, PROBABILITIES, embedding_path, read_cell_table, top_calls
from hpasc.submission.rows import parse_prediction_string, read_submission
from tests.conftest import REPO, assert_one_line_error, run_script
from tests.test_infer import checkpoint  # noqa: F401 (a small trained model)


@pytest.fixture(scope="module")
def images(checkpoint: Path, tmp_path_factory) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("table") / "images"
    shutil.copytree(checkpoint.parents[1] / "syn", folder, ignore=shutil.ignore_patterns("truth", "*.csv"))
    return folder


@pytest.fixture(scope="module")
def run_infer(checkpoint: Path, images: Path, tmp_path_factory) -> Callable[[str], tuple[Path, Path, str]]:  # noqa: F811
    """run_infer(suffix) → (submission, cell table, stderr) of infer.py with an ensemble of the model
    twice, the table written as ``suffix`` with embeddings; each suffix runs once per module."""
    done: dict[str, tuple[Path, Path, str]] = {}

    def run(suffix: str) -> tuple[Path, Path, str]:
        if suffix not in done:
            folder = tmp_path_factory.mktemp(f"run-{suffix[1:]}")
            ensemble = folder / "e.yaml"
            ensemble.write_text(f"groups: [{{members: [{checkpoint}, {checkpoint}]}}]\n")
            out, table_path = folder / "submission.csv", folder / f"cells{suffix}"
            result = run_script("infer.py", "-i", images, "-e", ensemble, "-o", out, "--cells-out", table_path,
                                "--embeddings", "--backend", "classical", "--workers", "2", "--no-progress")
            assert result.returncode == 0, result.stderr
            done[suffix] = (out, table_path, result.stderr)
        return done[suffix]

    return run


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_table_holds_the_submissions_cells(run_infer, suffix: str) -> None:
    out, table_path, stderr = run_infer(suffix)
    assert stderr.strip().splitlines()[-1].endswith(
        f"INFO done: 12 of 12 images predicted; 0 failed; output in {out}, {table_path}")
    table = read_cell_table(table_path)
    submission = read_submission(out)
    expected = [(image_id, mask, klass, confidence) for image_id, text in zip(submission["ID"],
                                                                               submission["PredictionString"])
                for klass, confidence, mask in parse_prediction_string(text)]
    assert len(table) * NUM_CLASSES == len(expected) and len(table) > 20
    got = [(row.image_id, k, float(f"{getattr(row, c):.6g}")) for row in table.itertuples()
           for k, c in enumerate(CONFIDENCES)]
    assert got == [(image_id, klass, confidence) for image_id, _, klass, confidence in expected]
    assert (table["cell_id"] == table["image_id"] + "_" + (table["mask_id"] - 1).astype(str)).all()
    assert ((table["y0"] <= table["centroid_y"]) & (table["centroid_y"] < table["y1"])).all()
    assert ((table["x0"] <= table["centroid_x"]) & (table["centroid_x"] < table["x1"])).all()
    confidences = table[list(CONFIDENCES)].to_numpy()
    assert (table["top_class"].to_numpy() == confidences.argmax(axis=1)).all()
    assert np.allclose(table["top1_conf"], confidences.max(axis=1))
    assert not np.allclose(table[list(PROBABILITIES)].to_numpy(), confidences)  # the weighting changed them
    for member in (0, 1):
        vectors = np.load(embedding_path(table_path, member))
        assert vectors.dtype == np.float16 and vectors.shape == (len(table), 1280)  # EfficientNet-B0's width
    assert np.array_equal(np.load(embedding_path(table_path, 0)), np.load(embedding_path(table_path, 1)))
    index = json.loads(table_path.with_name("cells.embeddings.json").read_text())
    assert list(index) == ["cells.embeddings-0.npy", "cells.embeddings-1.npy"]


def test_the_table_alone_and_bad_options(checkpoint: Path, images: Path, tmp_path: Path) -> None:  # noqa: F811
    table_path = tmp_path / "cells.parquet"
    result = run_script("infer.py", "-i", images, "-e", checkpoint, "--cells-out", table_path, "--backend",
                        "classical", "--workers", "2", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(table_path)) > 0 and not (tmp_path / "submission.csv").exists()
    assert not list(tmp_path.glob("*.npy"))
    assert_one_line_error(run_script("infer.py", "-i", images, "-e", checkpoint, "--embeddings", "--no-progress"),
                          "--embeddings needs --cells-out")
    assert_one_line_error(run_script("infer.py", "-i", images, "-e", checkpoint, "--cells-out", tmp_path / "c.xlsx",
                                     "--no-progress"), "c.xlsx", ".parquet or .csv")
    assert_one_line_error(run_script("infer.py", "-i", images, "-e", checkpoint, "--cells-out", table_path,
                                     "--no-progress"), str(table_path), "--overwrite")


def test_the_h5ad_holds_the_parquet_tables_values_and_the_submissions_calls(run_infer, tmp_path: Path) -> None:
    # Issue 30: one run to .h5ad and one to Parquet (the same images, checkpoints and options).
    submission_path, h5ad_path, _ = run_infer(".h5ad")
    _, parquet_path, _ = run_infer(".parquet")
    cells = anndata.read_h5ad(h5ad_path)
    table = read_cell_table(parquet_path)
    obs = [c for c in table.columns if c not in (*PROBABILITIES, *CONFIDENCES)]
    assert list(cells.obs.columns) == obs and list(cells.obs_names) == list(table["cell_id"])
    for column in obs:
        assert list(cells.obs[column]) == list(table[column]), column
    assert list(cells.obsm["confidences"].columns) == list(CLASS_NAMES)
    assert np.array_equal(cells.obsm["confidences"].to_numpy(), table[list(CONFIDENCES)].to_numpy())
    assert np.array_equal(cells.obsm["probabilities"].to_numpy(), table[list(PROBABILITIES)].to_numpy())
    for member in (0, 1):
        vectors = np.load(embedding_path(parquet_path, member))
        assert np.array_equal(cells.obsm[f"embedding_{member}"], vectors)
    assert np.allclose(cells.X, vectors.astype(np.float32), atol=1e-3)  # the members' mean (here one model twice)
    record = cells.uns["hpasc"]
    assert len(record["members"]) == 2 and record["members"][0] == record["members"][1]
    assert json.loads(record["segmentation"])["backend"] == "classical"
    assert json.loads(record["tile_specs"])[0]["size"] > 0 and "hpasc" in json.loads(record["software"])
    # The submission's (image, class, confidence) triplets are the file's.
    submission = read_submission(submission_path)
    expected = sorted((image_id, klass, confidence) for image_id, text in zip(submission["ID"],
                                                                                 submission["PredictionString"])
                      for klass, confidence, _ in parse_prediction_string(text))
    confidences = cells.obsm["confidences"].to_numpy()
    got = sorted((image_id, k, float(f"{confidences[i, k]:.6g}")) for i, image_id in enumerate(cells.obs["image_id"])
                 for k in range(NUM_CLASSES))
    assert got == expected
    # scanpy reads it without conversion: the documentation's own lines, with no warning (issue 38, item 7).
    page = (REPO / "docs" / "infer.md").read_text()
    recipe = page.split("A scanpy user loads and draws it with", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = recipe.replace('"demo_out/cells.h5ad"', repr(str(h5ad_path))).replace(
        'color="top1_class")', 'color="top1_class", save="_cells.png", show=False)')
    shown = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "dimensions" not in shown.stderr, shown.stderr
    assert (tmp_path / "figures" / "umap_cells.png").stat().st_size > 10_000


def test_the_top_calls_name_negative_only_where_it_is_the_call() -> None:
    confidences = np.full((3, NUM_CLASSES), 0.01)
    confidences[0, [NEGATIVE, 4, 7]] = [0.9, 0.5, 0.3]  # Negative is the call: then the next two
    confidences[1, [2, NEGATIVE, 16]] = [0.8, 0.6, 0.4]  # Negative second: left out
    confidences[2, [16, 0, 2]] = [0.7, 0.7, 0.1]  # a tie keeps the class order
    calls = top_calls(confidences)
    assert list(calls.columns) == ["top1_class", "top1_conf", "top2_class", "top2_conf", "top3_class", "top3_conf"]
    assert calls.iloc[0].tolist() == ["Negative", 0.9, CLASS_NAMES[4], 0.5, CLASS_NAMES[7], 0.3]
    assert calls.iloc[1].tolist() == [CLASS_NAMES[2], 0.8, "Cytosol", 0.4, CLASS_NAMES[0], 0.01]
    assert calls.iloc[2].tolist() == [CLASS_NAMES[0], 0.7, "Cytosol", 0.7, CLASS_NAMES[2], 0.1]
