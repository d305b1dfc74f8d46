"""infer.py end to end as a real subprocess: synthetic test images, a small trained checkpoint, the
classical segmentation. The submission passes the check, its RLE decodes to exactly the cell masks,
rows follow the sample submission, a broken image gets an empty row, an image without cells and a
3072² image get valid rows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpasc.core.image_folder import scan_images
from hpasc.core.images import CHANNELS, read_label_image, write_png
from hpasc.models.checkpoint import load_checkpoint, save_checkpoint
from hpasc.stages.infer.ensemble import LoadedEnsemble
from hpasc.stages.infer.ensemble_file import read_ensemble
from hpasc.stages.infer.jobs import CellCutter, cells_of_image
from hpasc.stages.infer.settings import InferSettings
from hpasc.stages.infer.stage import ScoringSink
from hpasc.segmentation.classical import segment_classical
from hpasc.submission.check import check_submission
from hpasc.submission.rle import decode_mask
from hpasc.submission.rows import parse_prediction_string, read_submission
from tests.conftest import REPO, assert_one_line_error, make_dataset, run_script, run_short_of_shared_memory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = make_dataset(tmp_path_factory.mktemp("infer"), images=12, size=384, tile=32, seed=11)
    result = run_script("train_me.py", "-i", root / "dataset", "-s", root / "models", "--pretrained", "none",
                        "--epochs", "1", "--epoch-size", "64", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    return root / "models" / "b0-bce-1.pt"


@pytest.fixture(scope="module")
def test_images(tmp_path_factory) -> tuple[Path, Path]:
    """Synthetic test images plus a blank one (no cells) and one missing its yellow channel, with
    a sample submission listing them in a shuffled order."""
    root = tmp_path_factory.mktemp("test_images")
    result = run_script("-m", "hpasc.commands.synthetic", "-o", root / "syn", "-n", "4", "--size", "256",
                        "--seed", "21", "--no-progress")
    assert result.returncode == 0, result.stderr
    images = root / "test"
    shutil.copytree(root / "syn", images, ignore=shutil.ignore_patterns("truth", "*.csv"))
    for channel in CHANNELS:
        write_png(images / f"blank_{channel}.png", np.zeros((256, 256), np.uint16))
    broken = sorted(p.name.removesuffix("_red.png") for p in images.glob("*_red.png"))[0]
    (images / f"{broken}_yellow.png").unlink()
    ids = sorted(p.name.removesuffix("_red.png") for p in images.glob("*_red.png"))
    order = ids[::-1]
    pd.DataFrame({"ID": order, "ImageWidth": 256, "ImageHeight": 256, "PredictionString": ""}).to_csv(
        root / "sample_submission.csv", index=False)
    return images, root / "sample_submission.csv"


def test_infer_writes_a_valid_submission_in_sample_order(checkpoint, test_images, tmp_path) -> None:
    images, sample = test_images
    out, masks = tmp_path / "submission.csv", tmp_path / "masks"
    result = run_script("infer.py", "-i", images, "-e", checkpoint, "-o", out, "--sample-submission", sample,
                        "--backend", "classical", "--save-masks", masks, "--workers", "2", "--no-progress")
    assert result.returncode == 1, result.stderr  # one image is broken
    assert "missing channel(s) yellow" in result.stderr
    submission = read_submission(out)
    order = pd.read_csv(sample)["ID"].tolist()
    assert submission["ID"].tolist() == order
    assert check_submission(submission, None, order) == []
    rows = submission.set_index("ID")
    broken = [i for i in order if not (masks / f"{i}.png").exists()]
    assert len(broken) == 1 and rows.loc[broken[0], "PredictionString"] == ""
    assert (rows.loc[broken[0], "ImageWidth"], rows.loc[broken[0], "ImageHeight"]) == (256, 256)
    assert rows.loc["blank", "PredictionString"] == ""
    predicted = [i for i in order if i not in (broken[0], "blank")]
    for image_id in predicted:
        labels = read_label_image(masks / f"{image_id}.png")
        triplets = parse_prediction_string(rows.loc[image_id, "PredictionString"])
        cells = list(dict.fromkeys(mask for _, _, mask in triplets))
        assert len(triplets) == 19 * labels.max() and len(cells) == labels.max()
        decoded = {int(np.unique(labels[decode_mask(m, 256, 256)])[0]) for m in cells}
        assert decoded == set(range(1, labels.max() + 1))
        for mask in cells:
            cell = decode_mask(mask, 256, 256)
            assert (labels[cell] == labels[cell][0]).all() and cell.sum() == (labels == labels[cell][0]).sum()
        assert all(0.0 <= confidence <= 1.0 for _, confidence, _ in triplets)


def test_sample_ids_without_images_are_one_line_up_front(checkpoint, test_images, tmp_path) -> None:
    """A sample submission of many ids for a few images: one warning with the counts (not a line
    per id); of ids none of which has images: one refusal, and no submission (issue 38, item 1)."""
    images, sample = test_images
    ids = pd.read_csv(sample)["ID"].tolist()
    many = tmp_path / "many.csv"
    others = [f"absent-{k:03d}" for k in range(40)]
    pd.DataFrame({"ID": ids + others, "ImageWidth": 256, "ImageHeight": 256, "PredictionString": ""}).to_csv(
        many, index=False)
    result = run_script("infer.py", "-i", images, "-e", checkpoint, "-o", tmp_path / "sub.csv", "--sample-submission",
                        many, "--backend", "classical", "--workers", "1", "--no-progress")
    assert result.returncode == 1, result.stderr
    assert f"40 of the sample submission's {len(ids) + 40} ids have no image files in {images} (e.g. absent-000)" \
        in result.stderr
    assert "absent-001" not in result.stderr
    assert "1 checkpoint, classical segmentation" in result.stderr  # not "1 checkpoints" (item 13)
    assert len(read_submission(tmp_path / "sub.csv")) == len(ids) + 40
    none = tmp_path / "none.csv"
    pd.DataFrame({"ID": others, "ImageWidth": 256, "ImageHeight": 256, "PredictionString": ""}).to_csv(none, index=False)
    refused = run_script("infer.py", "-i", images, "-e", checkpoint, "-o", tmp_path / "none-sub.csv",
                         "--sample-submission", none, "--backend", "classical", "--workers", "1", "--no-progress")
    assert_one_line_error(refused, "none of the sample submission's 40 ids has image files here")
    assert not (tmp_path / "none-sub.csv").exists()


def test_raw_scores_differ_from_postprocessed_ones(checkpoint, test_images, tmp_path) -> None:
    images, sample = test_images
    outputs = {}
    for name, extra in (("post", ()), ("raw", ("--no-postprocessing",))):
        outputs[name] = tmp_path / f"{name}.csv"
        run_script("infer.py", "-i", images, "-e", checkpoint, "-o", outputs[name], "--sample-submission",
                   sample, "--backend", "classical", "--workers", "1", "--no-progress", *extra)
    post, raw = (read_submission(outputs[n]).set_index("ID")["PredictionString"] for n in ("post", "raw"))
    assert (post != raw).any() and ((post == "") == (raw == "")).all()


def test_a_3072_image(checkpoint, tmp_path) -> None:
    result = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "big", "-n", "1", "--size", "3072",
                        "--seed", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "submission.csv"
    result = run_script("infer.py", "-i", tmp_path / "big", "-e", checkpoint, "-o", out, "--backend",
                        "classical", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    submission = read_submission(out)
    assert submission["ImageWidth"].tolist() == [3072] and check_submission(submission, None, None) == []
    assert len(parse_prediction_string(submission["PredictionString"][0])) >= 19 * 5


def test_bad_input_is_one_line(checkpoint, test_images, tmp_path) -> None:
    images, _ = test_images
    assert_one_line_error(run_script("infer.py", "-i", images, "-e", tmp_path / "none.yaml", "-o",
                                     tmp_path / "s.csv", "--no-progress"), "none.yaml")
    assert_one_line_error(run_script("infer.py", "-i", tmp_path / "nowhere", "-e", checkpoint, "-o",
                                     tmp_path / "s.csv", "--no-progress"), "nowhere")
    assert not (tmp_path / "s.csv").exists()
    (tmp_path / "a_file").write_text("")  # refused before any image is read, not after the run
    assert_one_line_error(run_script("infer.py", "-i", images, "-e", checkpoint, "-o", tmp_path / "a_file" / "s.csv",
                                     "--backend", "classical", "--no-progress"), "a_file is not a folder")


def test_hpa_backend_through_the_network_pipeline(checkpoint, random_weights, tmp_path) -> None:
    """HPA's networks (random weights: the real ones cannot be downloaded here) run in this
    process on batches while workers restore, label, cut and encode."""
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "images", "-n", "3", "--size", "200x300",
                      "--seed", "5", "--no-progress")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "submission.csv"
    result = run_script("infer.py", "-i", tmp_path / "images", "-e", checkpoint, "-o", out,
                        "--backend", "hpa", "--nuclei-model", random_weights, "--cell-model", random_weights,
                        "--segmentation-batch", "2", "--device", "cpu", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    submission = read_submission(out)
    assert len(submission) == 3 and (submission["ImageWidth"] == 300).all()
    assert (submission["ImageHeight"] == 200).all() and check_submission(submission, None, None) == []


def with_segmentation(checkpoint: Path, out: Path, segmentation: dict | None) -> Path:
    """A copy of ``checkpoint`` whose model spec records ``segmentation`` (None: no record at all, as
    in checkpoints written before it was recorded)."""
    content = load_checkpoint(checkpoint)
    spec = dict(content["model_spec"])
    spec.pop("segmentation", None)
    if segmentation is not None:
        spec["segmentation"] = segmentation
    save_checkpoint(out, {**content, "model_spec": spec})
    return out


HPA_MADE = {"backend": "hpa", "weights": {"dpn_unet_cell_3ch_v1.pth": "ab" * 32, "dpn_unet_nuclei_v1.pth": "cd" * 32}}


def test_a_model_trained_on_hpa_masks_refuses_classical_ones(checkpoint, test_images, tmp_path) -> None:
    images, sample = test_images
    hpa_trained = with_segmentation(checkpoint, tmp_path / "hpa-trained.pt", HPA_MADE)
    out = tmp_path / "submission.csv"
    run = ("infer.py", "-i", images, "-e", hpa_trained, "-o", out, "--sample-submission", sample,
           "--backend", "classical", "--workers", "1", "--no-progress")
    assert_one_line_error(run_script(*run), "hpa-trained.pt", "HPA's segmentation", "the classical backend",
                          "--allow-other-segmentation")
    assert not out.exists()
    allowed = run_script(*run, "--allow-other-segmentation")
    assert allowed.returncode == 1, allowed.stderr  # the broken image, as without a record
    assert "WARNING" in allowed.stderr and "trained on cells of HPA's segmentation" in allowed.stderr
    assert check_submission(read_submission(out), None, None) == []


def test_the_pipeline_changes_no_result_and_old_checkpoints_infer_identically(checkpoint, test_images,
                                                                             tmp_path) -> None:
    """infer.py's workers hand tiles over in shared memory: the submission is exactly what scoring each
    image's cells in one process gives, and a checkpoint without a segmentation record (written
    before it was recorded) gives the same submission."""
    images, sample = test_images
    old = with_segmentation(checkpoint, tmp_path / "old.pt", None)
    outputs = {}
    for name, model in (("new", checkpoint), ("old", old)):
        outputs[name] = tmp_path / f"{name}.csv"
        result = run_script("infer.py", "-i", images, "-e", model, "-o", outputs[name], "--sample-submission",
                            sample, "--backend", "classical", "--workers", "2", "--no-progress")
        assert result.returncode == 1, result.stderr  # the broken image
    new, old_rows = (read_submission(outputs[n]).set_index("ID")["PredictionString"] for n in ("new", "old"))
    assert (new == old_rows).all()
    reference = rows_in_one_process(checkpoint, images)
    assert set(reference) and {i: new[i] for i in reference} == reference


def rows_in_one_process(checkpoint: Path, images: Path) -> dict[str, str]:
    """Each readable image's prediction string, segmented, cut and scored here, image by image."""
    folder = scan_images(images)
    ensemble = read_ensemble(checkpoint)
    loaded = LoadedEnsemble(ensemble, torch.device("cpu"))
    with ScoringSink(loaded, InferSettings(), ensemble.postprocessing) as predictor:
        for image_id in folder.ids:
            image = folder.read(image_id)
            nuclei, cells = segment_classical(image)
            predictor(image_id, cells_of_image(image_id, image, cells, nuclei, CellCutter(loaded.tile_specs)).shared(None))
    return {image_id: text for image_id, (_, _, text) in predictor.rows.items()}


def test_the_scoring_thread_writes_what_the_main_thread_wrote(tmp_path: Path) -> None:
    """The submission and cell table of the code before scoring moved to its own thread (its README)."""
    before = REPO / "tests" / "data" / "made_before_scoring_thread"
    result = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "syn", "-n", 4, "--size", 256, "--seed", 3,
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    result = run_script("infer.py", "-i", tmp_path / "syn", "-e", REPO / "tests" / "data" / "made_before_tile_spec"
                        / "old-1.pt", "-o", tmp_path / "sub.csv", "--cells-out", tmp_path / "cells.csv",
                        "--backend", "classical", "--workers", 1, "--no-progress")
    assert result.returncode == 0, result.stderr
    got, expected = read_submission(tmp_path / "sub.csv"), read_submission(before / "submission.csv")
    assert got["ID"].tolist() == expected["ID"].tolist()
    for mine, theirs in zip(got["PredictionString"], expected["PredictionString"]):
        mine, theirs = mine.split(), theirs.split()
        assert mine[0::3] == theirs[0::3] and mine[2::3] == theirs[2::3]  # classes and masks
        np.testing.assert_allclose(np.float64(mine[1::3]), np.float64(theirs[1::3]), rtol=0, atol=2e-6)
    table, reference = pd.read_csv(tmp_path / "cells.csv"), pd.read_csv(before / "cells.csv")
    assert table.columns.tolist() == reference.columns.tolist()
    floats = [c for c in reference.columns if c.startswith(("prob_", "conf_", "top1_conf", "top2_conf", "top3_conf"))]
    pd.testing.assert_frame_equal(table.drop(columns=floats), reference.drop(columns=floats))
    np.testing.assert_allclose(table[floats].to_numpy(), reference[floats].to_numpy(), rtol=0, atol=1e-6)


def test_a_scoring_error_stops_the_run_on_the_main_thread(checkpoint, test_images, monkeypatch) -> None:
    folder = scan_images(test_images[0])
    ensemble = read_ensemble(checkpoint)
    loaded = LoadedEnsemble(ensemble, torch.device("cpu"))

    def fail(self, tiles):
        raise RuntimeError("CUDA out of memory (a stand-in)")
    monkeypatch.setattr(ScoringSink, "score", fail)
    image_id = folder.ids[0]
    image = folder.read(image_id)
    nuclei, cells = segment_classical(image)
    with pytest.raises(RuntimeError, match="a stand-in"), \
            ScoringSink(loaded, InferSettings(), ensemble.postprocessing) as predictor:
        scored = predictor(image_id, cells_of_image(image_id, image, cells, nuclei, CellCutter(loaded.tile_specs))
                           .shared(None))
    assert scored.done() and not predictor.rows


def test_a_malformed_segmentation_record_is_one_line_naming_the_checkpoint(checkpoint, test_images, tmp_path) -> None:
    """A checkpoint whose segmentation record is not one (``backend: 7``) is refused in one line that
    names it, not with a traceback (issue 38, item 12)."""
    images, _ = test_images
    bad = load_checkpoint(checkpoint)
    bad["model_spec"]["segmentation"] = {"backend": 7}
    save_checkpoint(tmp_path / "bad.pt", bad)
    result = run_script("infer.py", "-i", images, "-e", tmp_path / "bad.pt", "-o", tmp_path / "sub.csv",
                        "--backend", "classical", "--workers", "1", "--no-progress")
    assert_one_line_error(result, f"{tmp_path / 'bad.pt'}: model_spec has an invalid value", "backend")


@pytest.mark.parametrize("short", ["file-size limit", "small tmpfs"])
def test_short_shared_memory_gives_the_same_output_and_no_traceback(checkpoint, test_images, tmp_path,
                                                                     short: str) -> None:
    """With little room for shared memory (a file-size limit of 300 KB, or a /dev/shm of 1 MB in a
    mount namespace, as Docker's 64 MB is for 2048² images), infer.py warns once and moves the
    arrays another way: the same submission, and no resource-tracker traceback (issue 38)."""
    images, sample = test_images
    outputs = {}
    for name in ("room", "short"):
        outputs[name] = tmp_path / f"{name}.csv"
        command = [sys.executable, str(REPO / "infer.py"), "-i", str(images), "-e", str(checkpoint), "-o",
                   str(outputs[name]), "--sample-submission", str(sample), "--backend", "classical", "--workers", "2",
                   "--no-progress"]
        result = run_short_of_shared_memory(command, short if name == "short" else None)
        assert result.returncode == 1, result.stderr  # the fixture's broken image
        assert "Traceback" not in result.stderr and "KeyError" not in result.stderr, result.stderr
        assert ("shared memory is short" in result.stderr) is (name == "short")
    assert outputs["short"].read_bytes() == outputs["room"].read_bytes()
