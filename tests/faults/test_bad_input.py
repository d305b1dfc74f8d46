"""Items 4, 11, 15, 16 and 18 of the fault matrix: decompression bombs, a zero-byte channel, a
float32 TIFF and malformed URLs each fail their own item in one named line while the rest
complete; an empty input folder is exit 2 in every stage; train.csv's repeated and unlabelled
rows are reported; OpenCV says nothing on the terminal; infer.py keeps an existing submission
without --overwrite; scripts/demo.sh --help prints its usage."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from hpasc.core.classes import read_label_table
from hpasc.core.errors import InputError
from hpasc.core.images import CHANNELS, Limits, decode_channel
from tests.conftest import REPO, assert_one_line_error, run_script


def _huge_tiff(width: int, height: int) -> bytes:
    """A small TIFF whose header claims ``width`` × ``height`` pixels (its data is 16 × 16)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((16, 16), np.uint16))
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        tags = tiff.pages[0].tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tags[name]
            size = 2 if tag.dtype == 3 else 4
            data[tag.valueoffset:tag.valueoffset + size] = value.to_bytes(size, "little")
    return bytes(data)


def test_bombs_are_refused_before_they_inflate() -> None:
    with pytest.raises(InputError, match="exceeds the limit"):
        decode_channel(_huge_tiff(40960, 40960), "x_red.tif")
    with pytest.raises(InputError, match="exceeds the limit"):
        decode_channel(gzip.compress(_huge_tiff(40960, 40960)), "x_red.tif.gz")
    bomb = gzip.compress(bytes(9 << 20), compresslevel=9)  # 9 MiB of zeros in ~9 KB
    with pytest.raises(InputError, match="inflates to more than 8 MiB"):
        decode_channel(bomb, "x_red.tif.gz", Limits(max_pixels=1 << 30, max_inflated_bytes=8 << 20))
    png = io.BytesIO()
    import cv2
    png.write(cv2.imencode(".png", np.zeros((16, 16), np.uint16))[1].tobytes())
    header = bytearray(png.getvalue())
    header[16:24] = (40960).to_bytes(4, "big") * 2
    with pytest.raises(InputError, match="exceeds the limit"):
        decode_channel(bytes(header), "x_red.png")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_mirror")
    made = run_script("-m", "hpasc.commands.synthetic", "-o", root / "syn", "-n", "3", "--size", "128", "--seed", "2",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    made = run_script("-m", "hpasc.commands.mirror", "-i", root / "syn", "-o", root / "mirror", "--no-progress")
    assert made.returncode == 0, made.stderr
    return root / "mirror"


def test_a_bomb_and_bad_urls_fail_their_own_image_only(mirror: Path, tmp_path: Path) -> None:
    table = pd.read_csv(mirror / "kaggle_2021.tsv", sep="\t")
    bomb = Path(table["Image"][0].removeprefix("file://"))
    for channel in CHANNELS:
        Path(f"{bomb}_{channel}.tif.gz").write_bytes(gzip.compress(_huge_tiff(40960, 40960)))
    extra = table.iloc[[1, 1]].assign(Image=["/tmp/x", "http://[::1:bad"])
    pd.concat([table, extra]).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    result = run_script("download_publichpa.py", "-i", tmp_path / "t.tsv", "-o", out, "--workers", "2",
                        "--no-progress")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"INFO done: {len(table) - 1} images downloaded, 0 downloaded before (failures listed in failures.csv); "
        f"3 failed; output in {out}")
    failures = pd.read_csv(out / "failures.csv")
    assert bomb.name in set(failures["ID"])
    assert len(failures) == 3 and any("exceeds the limit" in r for r in failures["reason"])
    assert sum("bad URL" in r for r in failures["reason"]) == 2
    labels = pd.read_csv(out / "labels.csv")
    assert len(labels) == len(table) - 1 and bomb.name not in set(labels["ID"])


def test_an_empty_folder_is_exit_2_everywhere(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    (tmp_path / "m.pt").write_bytes(b"")  # infer.py reads the ensemble first; the folder fails before the model
    checks = [("segmentator.py", "-i", empty, "-c", tmp_path / "c", "--backend", "classical"),
              ("image_cutter.py", "-i", empty, "-m", empty, "-o", tmp_path / "d", "--no-labels"),
              ("infer.py", "-i", empty, "-e", tmp_path / "m.pt", "-o", tmp_path / "s.csv")]
    for args in checks:
        assert_one_line_error(run_script(*args, "--no-progress"), str(empty))
    table = tmp_path / "t.tsv"
    table.write_text("Image\tLabel\tCellline\tin_trainset\nhttp://x/1/a\tNo such place\tU2OS\tFalse\n")
    assert_one_line_error(run_script("download_publichpa.py", "-i", table, "-o", tmp_path / "o", "--no-progress"),
                          "no row")


def test_train_csv_repeats_and_missing_labels_are_reported(tmp_path: Path, caplog) -> None:
    path = tmp_path / "train.csv"
    path.write_text("ID,Label\na,1|2\nb,\na,1|2\nc,3\n")
    assert read_label_table(path) == {"a": [1, 2], "b": [], "c": [3]}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "1 rows are repeated" in messages and "1 rows have no Label" in messages
    path.write_text("ID,Label\na,0|1\nb,2\na,1|0\n")  # the same labels in another order: read once
    assert read_label_table(path) == {"a": [1, 0], "b": [2]}
    path.write_text("ID,Label\na,1\nb,2\na,3\n")
    with pytest.raises(InputError, match="line 4: a is listed on line 2 with other labels"):
        read_label_table(path)


def test_broken_channels_fail_alone_and_never_get_a_bad_row(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(checkpoint.parents[1] / "syn", images, ignore=shutil.ignore_patterns("truth", "*.csv"))
    ids = sorted(p.name.removesuffix("_red.png") for p in images.glob("*_red.png"))
    (images / f"{ids[0]}_green.png").write_bytes(b"")  # zero bytes
    (images / f"{ids[1]}_red.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # libpng would complain
    for channel in CHANNELS:
        (images / f"{ids[2]}_{channel}.png").unlink()
        tifffile.imwrite(images / f"BAD_{channel}.tif", np.ones((256, 256), np.float32))
        (images / f"NOSIZE_{channel}.png").write_bytes(b"")
    out = tmp_path / "submission.csv"
    result = run_script("infer.py", "-i", images, "-e", checkpoint, "-o", out, "--backend",
                        "classical", "--workers", "2", "--no-progress")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "WARN" not in result.stderr and "libpng" not in result.stderr
    assert f"{ids[0]}: failed:" in result.stderr and "empty file" in result.stderr
    assert "BAD: failed:" in result.stderr and "NOSIZE: left out of the submission" in result.stderr
    rows = pd.read_csv(out, keep_default_na=False)
    assert "NOSIZE" not in set(rows["ID"]) and (rows["ImageWidth"] > 0).all()
    assert set(rows["ID"]) == set(ids) - {ids[2]} | {"BAD"}
    kept = rows.set_index("ID")
    assert tuple(kept.loc["BAD", ["ImageWidth", "ImageHeight", "PredictionString"]]) == (256, 256, "")
    assert kept.loc[ids[0], "PredictionString"] == "" and kept.loc[ids[3], "PredictionString"] != ""

    again = run_script("infer.py", "-i", images, "-e", checkpoint, "-o", out, "--backend",
                       "classical", "--no-progress")
    assert_one_line_error(again, str(out), "--overwrite")
    assert pd.read_csv(out, keep_default_na=False).equals(rows)


def test_demo_help_prints_usage_and_runs_nothing(tmp_path: Path) -> None:
    result = subprocess.run([str(REPO / "scripts" / "demo.sh"), "--help"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: ./scripts/demo.sh [OUT]")
    assert not (tmp_path / "--help").exists() and not (REPO / "--help").exists()
    result = subprocess.run([str(REPO / "scripts" / "demo.sh"), "--bogus"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown option --bogus")
