"""python -m hpasc.commands.agreement on the real HPA masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from hpasc.core.images import read_label_image, write_label_image
from tests.conftest import assert_one_line_error, run_script


def test_agreement_of_hpa_masks_with_themselves_and_a_damaged_copy(tmp_path: Path, hpa_real: Path):
    pred = tmp_path / "pred"
    pred.mkdir()
    masks = sorted((hpa_real / "masks").glob("*_cellmask.png"))
    for path in masks[:2]:
        shutil.copy(path, pred / path.name.replace("_cellmask", ""))
    damaged = read_label_image(masks[1]).astype(np.uint16)
    cells = int(damaged.max())
    damaged[damaged == 1] = 0  # one cell lost: F1 = 2(n-1) / (2(n-1) + 1)
    write_label_image(pred / masks[1].name.replace("_cellmask", ""), damaged)

    result = run_script("-m", "hpasc.commands.agreement", "--truth", hpa_real / "masks",
                        "--pred", pred, "--truth-suffix", "_cellmask")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first = int(read_label_image(masks[0]).max())
    assert lines[0].endswith(f"F1 1.000  ({first} matched, 0 missed, 0 extra)")
    expected = 2 * (cells - 1) / (2 * (cells - 1) + 1)
    assert f"F1 {expected:.3f}  ({cells - 1} matched, 1 missed, 0 extra)" in lines[1]
    assert lines[-1] == f"mean F1: {(1 + expected) / 2:.4f}"
    worst = run_script("-m", "hpasc.commands.agreement", "--truth", hpa_real / "masks", "--pred", pred,
                       "--truth-suffix", "_cellmask", "--worst", "1")  # the demo's summary (issue 38, item 13)
    assert worst.returncode == 0, worst.stderr
    assert worst.stdout.splitlines() == ["the 1 image(s) of lowest F1 of 2:", lines[1], lines[-1]]


def test_missing_reference_is_a_one_line_error(tmp_path: Path, hpa_real: Path):
    write_label_image(tmp_path / "unknown-id.png", np.ones((4, 4), np.uint16))
    result = run_script("-m", "hpasc.commands.agreement", "--truth", hpa_real / "masks",
                        "--pred", tmp_path)
    assert_one_line_error(result, "unknown-id: no reference mask")
