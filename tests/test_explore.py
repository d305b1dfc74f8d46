"""The exploration report: real-data run, input-dependent figures, co-occurrence counts, the
cell-dataset part and the one-line error for a missing labels file."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpasc.core.classes import NUM_CLASSES
from hpasc.tools.explore import conditional, cooccurrence, label_report
from tests.conftest import assert_one_line_error, make_dataset, run_script


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def _assert_viewable(path: Path) -> None:
    assert path.stat().st_size > 0, path
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.size > 0, path


def test_real_labels_and_overlays(hpa_real: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_script("-m", "hpasc.commands.explore", "--labels", hpa_real / "train.csv",
                        "--images", hpa_real / "images", "--masks", hpa_real / "masks",
                        "--mask-suffix", "_cellmask", "--overlays", "2", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr

    pngs = _pngs(out)
    names = {p.relative_to(out).as_posix() for p in pngs}
    assert {"prevalence.png", "cooccurrence.png", "labels_per_image.png"} <= names
    overlays = sorted(n for n in names if n.startswith("overlays/"))
    assert len(overlays) == 2
    for path in pngs:
        _assert_viewable(path)
    assert max(cv2.imread(str(out / overlays[0])).shape[:2]) <= 1024

    index = (out / "index.html").read_text()
    links = set(re.findall(r'href="([^"]+)"', index))
    assert names <= links
    assert (out / "manifest.json").is_file()

    train = pd.read_csv(hpa_real / "train.csv", dtype=str, keep_default_na=False)
    tokens = train["Label"].str.split("|").apply(lambda t: sorted({int(x) for x in t if x}))
    expected = tokens.explode().dropna().astype(int).value_counts()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["class"]) == list(range(NUM_CLASSES))
    for c in range(NUM_CLASSES):
        assert summary.loc[c, "images"] == expected.get(c, 0), c
    assert summary.loc[0, "share"] == round(expected[0] / len(train), 6)


def test_prevalence_chart_depends_on_labels(tmp_path: Path) -> None:
    first = {"a": [0], "b": [0, 5], "c": [16]}
    second = {"a": [2], "b": [2, 11], "c": [18], "d": [18]}
    pixels = []
    for name, labels in (("first", first), ("second", second)):
        label_report(labels, tmp_path / name)
        pixels.append(cv2.imread(str(tmp_path / name / "prevalence.png")))
    assert pixels[0].shape == pixels[1].shape
    assert not np.array_equal(pixels[0], pixels[1])


def test_cooccurrence_hand_computed() -> None:
    labels = [[0, 16], [0], [16, 0, 5], [5, 5]]
    counts = cooccurrence(labels)
    assert counts.shape == (NUM_CLASSES, NUM_CLASSES)
    assert counts[0, 0] == 3 and counts[16, 16] == 2 and counts[5, 5] == 2
    assert counts[0, 16] == counts[16, 0] == 2
    assert counts[0, 5] == counts[5, 16] == 1
    assert counts.sum() == 3 + 2 + 2 + 2 * (2 + 1 + 1)
    share = conditional(counts)
    assert share[16, 0] == 1.0 and share[0, 16] == 2 / 3 and share[5, 0] == 0.5
    assert share[1].sum() == 0.0


def test_dataset_cells_and_examples(tmp_path: Path) -> None:
    make_dataset(tmp_path, images=6, size=256, tile=32, seed=3)
    out = tmp_path / "report"
    result = run_script("-m", "hpasc.commands.explore", "--labels", tmp_path / "syn" / "train.csv",
                        "--dataset", tmp_path / "dataset", "--examples", "3", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    _assert_viewable(out / "cells_per_image.png")
    examples = _pngs(out / "examples")
    assert examples and all(re.fullmatch(r"class_\d+\.png", p.name) for p in examples)
    for path in examples:
        _assert_viewable(path)
    index = (out / "index.html").read_text()
    assert all(f'href="examples/{p.name}"' in index for p in examples)


def test_missing_labels_file_is_one_line_error(tmp_path: Path) -> None:
    result = run_script("-m", "hpasc.commands.explore", "--labels", tmp_path / "nope.csv", "--out", tmp_path / "r")
    assert_one_line_error(result, "nope.csv")
    assert not (tmp_path / "r" / "index.html").exists()
