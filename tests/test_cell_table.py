"""infer.py --cells-out: one row per cell, equal to the submission's cells and confidences; the
embeddings have each member's feature width and one row per cell; bad table options are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpasc.core.classes import NUM_CLASSES
from hpasc.stages.infer.cell_table import CONFIDENCES, PROBABILITIES, embedding_path, read_cell_table
from hpasc.submission.rows import parse_prediction_string, read_submission
from tests.conftest import assert_one_line_error, run_script
from tests.test_infer import checkpoint  # noqa: F401 (a small trained model)


@pytest.fixture(scope="module")
def images(checkpoint: Path, tmp_path_factory) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("table") / "images"
    shutil.copytree(checkpoint.parents[1] / "syn", folder, ignore=shutil.ignore_patterns("truth", "*.csv"))
    return folder


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_table_holds_the_submissions_cells(checkpoint: Path, images: Path, tmp_path: Path,  # noqa: F811
                                               suffix: str) -> None:
    out, table_path = tmp_path / "submission.csv", tmp_path / f"cells{suffix}"
    ensemble = tmp_path / "e.yaml"
    ensemble.write_text(f"groups: [{{members: [{checkpoint}, {checkpoint}]}}]\n")
    result = run_script("infer.py", "-i", images, "-e", ensemble, "-o", out, "--cells-out", table_path,
                        "--embeddings", "--backend", "classical", "--workers", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
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
    assert np.allclose(table["top_confidence"], confidences.max(axis=1))
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
