"""The checkout stands alone: no file reads a folder beside it, and a
copy of the checkout in a folder with nothing beside it passes the tests of the real samples and the
4th place's labels (those skipped, naming the command that fetches them, when they are absent)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, checkout_files, copy_checkout

BESIDE = "../" + "shared"  # spelt in two so that this file does not name it
SUBSET = ("tests/test_labels_fourth_place.py", "tests/test_labels_fetch.py", "tests/test_training_targets.py",
          "tests/test_classes.py::test_real_train_csv", "tests/test_images.py::test_hpa_uint8_masks_read",
          "tests/test_rle_submission.py::test_real_sample_submission_parses",
          "tests/test_segmentation_network.py::test_state_dict_layout_matches_the_official_one")


def test_no_file_names_a_folder_beside_the_checkout() -> None:
    """Only CI's script may (CI keeps the 4th place's labels there)."""
    naming = []
    for name in checkout_files():
        if name == ".ci/run":
            continue
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, pickles, checkpoints
            continue
        if BESIDE in text:
            naming.append(name)
    assert naming == []


def test_a_copy_alone_passes_without_the_labels_and_says_how_to_get_them(tmp_path: Path) -> None:
    clone = copy_checkout(tmp_path / "alone" / "hpasc")
    assert sorted(p.name for p in clone.parent.iterdir()) == ["hpasc"]
    env = {k: v for k, v in os.environ.items() if k not in ("HPASC_4TH_PLACE_LABELS", "PYTHONPATH")}
    env.update(HPASC_CACHE=str(tmp_path / "empty-cache"), PYTHONPATH=str(clone))
    where = subprocess.run([sys.executable, "-c", "import hpasc; print(hpasc.__file__)"], cwd=clone, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()) == clone / "hpasc" / "__init__.py"  # the copy's code, not this checkout's
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-rs", *SUBSET],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed, 10 skipped", summary), summary
    reasons = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(reasons) == 10 and all("run `hpasc-labels fetch`" in line for line in reasons)
