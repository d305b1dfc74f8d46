"""python -m hpasc.commands.report: a hand-made cell table gives the exact per-image quality numbers,
worst image first, the per-class shares of confident calls, and an HTML page with its plots; an
.h5ad table with embeddings gets a UMAP map in which separate clusters stay separate."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpasc.core.classes import NUM_CLASSES
from hpasc.core.errors import InputError
from hpasc.core.weights_cache import default_cache_dir
from hpasc.stages.infer.cell_table import CONFIDENCES, DESCRIPTORS, PROBABILITIES, CellTable, image_rows
from hpasc.tools.cell_map import sample_rows
from hpasc.tools.report import prevalence, read_groups
from tests.conftest import assert_one_line_error, run_script


def _table(path: Path) -> pd.DataFrame:
    rows = []
    # image a: 4 cells, 1 cut by the border, 1 outlier; image b: 2 clean cells.
    for image_id, k, border, outlier, confident in [("a", 1, 1.0, 1.0, 2), ("a", 2, 0.001, 1.0, 2),
                                                     ("a", 3, 1.0, 0.001, 5), ("a", 4, 1.0, 1.0, 18),
                                                     ("b", 1, 1.0, 1.0, 2), ("b", 2, 1.0, 1.0, 18)]:
        confidences = np.full(NUM_CLASSES, 0.1)
        confidences[confident] = 0.9
        rows.append({"image_id": image_id, "cell_id": f"{image_id}_{k - 1}", "mask_id": k, "y0": 0, "x0": 0,
                     "y1": 9, "x1": 9, "area": 50, "centroid_y": 4.0, "centroid_x": 4.0, "border": border,
                     "outlier": outlier, **dict(zip(PROBABILITIES, confidences)),
                     **dict(zip(CONFIDENCES, confidences)), "top_class": confident, "top_class_name": "x",
                     "top_confidence": 0.9})
    table = pd.DataFrame(rows)
    assert set(DESCRIPTORS) <= set(table.columns)
    table.to_csv(path, index=False)
    return table


def test_the_report_numbers_and_page(tmp_path: Path) -> None:
    table = _table(tmp_path / "cells.csv")
    shares = prevalence(table, 0.5)
    assert shares[2] == 3 / 6 and shares[18] == 2 / 6 and shares[5] == 1 / 6 and shares[0] == 0
    result = run_script("-m", "hpasc.commands.report", "--cells", tmp_path / "cells.csv", "--no-progress")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "cells-report"
    assert result.stdout.strip() == f"report: {out / 'index.html'}"
    images = pd.read_csv(out / "images.csv")
    assert images.to_dict("records") == [
        {"image_id": "a", "cells": 4, "cut": 1, "outliers": 1, "flagged_share": 0.5},
        {"image_id": "b", "cells": 2, "cut": 0, "outliers": 0, "flagged_share": 0.0}]
    page = (out / "index.html").read_text()
    assert "2 images, 6 cells, 6 confident calls" in page
    for figure in ("prevalence.png", "cells_per_image.png"):
        assert (out / figure).read_bytes().startswith(b"\x89PNG") and figure in page
    assert "No map: the table has no embeddings" in page


def test_a_missing_or_foreign_table_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_script("-m", "hpasc.commands.report", "--cells", tmp_path / "none.csv"), "none.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    result = run_script("-m", "hpasc.commands.report", "--cells", tmp_path / "other.csv")
    assert_one_line_error(result, "not a cell table")


def test_an_h5ad_table_with_embeddings_gets_a_map_that_separates_its_classes(tmp_path: Path) -> None:
    # Issue 30: three classes whose cells' embeddings lie in three separate clusters.
    rng = np.random.default_rng(0)
    classes, per_class = (2, 14, 16), 30
    confidences = np.full((3 * per_class, NUM_CLASSES), 0.05)
    for k, klass in enumerate(classes):
        confidences[k * per_class:(k + 1) * per_class, klass] = 0.9
    centres = rng.normal(0, 10, (3, 32))
    vectors = np.concatenate([centre + rng.normal(0, 0.5, (per_class, 32)) for centre in centres]).astype(np.float16)
    cells = pd.DataFrame({"image_id": np.repeat(["a", "b", "c"], per_class), "mask_id": np.tile(np.arange(1, 31), 3),
                          "y0": 0, "x0": 0, "y1": 9, "x1": 9, "area": 50, "centroid_y": 4.0, "centroid_x": 4.0,
                          "border": 1.0, "outlier": 1.0})
    cells["cell_id"] = cells["image_id"] + "_" + (cells["mask_id"] - 1).astype(str)
    table = CellTable(["m.pt"])
    table.add(image_rows(cells, confidences, confidences), [vectors])
    table.write(tmp_path / "cells.h5ad")
    pd.DataFrame({"ID": ["a", "b", "c"], "group": ["U2OS", "U2OS", "A549"]}).to_csv(tmp_path / "lines.csv",
                                                                                      index=False)
    result = run_script("-m", "hpasc.commands.report", "--cells", tmp_path / "cells.h5ad", "--groups",
                        tmp_path / "lines.csv", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr
    # The first map's minute of compiling is said, and its code kept for later runs (issue 38, item 5).
    assert "UMAP compiles its code the first time" in result.stderr
    numba_cache = Path(os.environ.get("NUMBA_CACHE_DIR") or default_cache_dir("numba"))
    assert any(numba_cache.rglob("*.nbi"))
    page = (tmp_path / "cells-report" / "index.html").read_text()
    assert "UMAP of the cells' embeddings" in page and "sample" not in page
    assert (tmp_path / "cells-report" / "map.png").read_bytes().startswith(b"\x89PNG")
    points = pd.read_csv(tmp_path / "cells-report" / "map.csv")
    assert list(points["cell_id"]) == list(cells["cell_id"])
    xy = points[["x", "y"]].to_numpy()
    centroids = [xy[k * per_class:(k + 1) * per_class].mean(axis=0) for k in range(3)]
    spread = max(np.linalg.norm(xy[k * per_class:(k + 1) * per_class] - centroids[k], axis=1).max() for k in range(3))
    gaps = [np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread  # three separate regions


def test_a_map_of_many_cells_is_drawn_from_a_seeded_sample() -> None:
    rows = sample_rows(90, max_cells=40)
    assert len(rows) == 40 and np.all(np.diff(rows) > 0) and rows[-1] < 90
    assert np.array_equal(rows, sample_rows(90, max_cells=40)) and not np.array_equal(rows, sample_rows(90, 40, 1))
    assert np.array_equal(sample_rows(30, max_cells=40), np.arange(30))


def test_a_groups_file_that_does_not_fit_the_table_is_said(tmp_path: Path, caplog) -> None:
    """An image with two groups is refused; ids that are not the table's images are one warning with
    how many and the first (issue 38, item 12)."""
    path = tmp_path / "groups.csv"
    pd.DataFrame({"ID": ["a", "b", "a", "a", "x", "y"], "group": ["U2OS", "A549", "U2OS", "HeLa", "U2OS", "U2OS"]}
                 ).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"1 image\(s\) have two groups or more \(the first: a: U2OS, HeLa\)"):
        read_groups(path, {"a", "b"})
    pd.DataFrame({"ID": ["a", "b", "x", "y"], "group": ["U2OS", "A549", "U2OS", "U2OS"]}).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING):
        assert read_groups(path, {"a", "b"}) == {"a": "U2OS", "b": "A549", "x": "U2OS", "y": "U2OS"}
    assert "2 of its 4 ids are not images of the table (the first: x)" in caplog.text
