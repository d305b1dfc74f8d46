"""Image I/O: every SPEC format round-trips, bad inputs get clear errors, writes are atomic."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.image_folder import scan_images
from hpasc.core.images import (CHANNELS, read_channel, read_label_image, write_channel, write_label_image,
                               write_png)
from hpasc.tools.synthetic import synthesize_image


def smooth_image(seed: int, shape=(96, 128)) -> np.ndarray:
    """A uint16 H×W×4 image with structure (so lossy JPG stays close) and full 16-bit range."""
    rng = np.random.default_rng(seed)
    noise = rng.random((*shape, 4)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 3)
    scaled = (blurred - blurred.min()) / np.ptp(blurred)
    return (scaled * 65535).astype(np.uint16)


FORMATS = {"png16": (".png", np.uint16), "png8": (".png", np.uint8), "tif": (".tif", np.uint16),
           "tif8": (".tif", np.uint8), "tif.gz": (".tif.gz", np.uint16), "jpg": (".jpg", np.uint16)}


def write_channels(folder: Path, image_id: str, image: np.ndarray, fmt: str) -> None:
    """Write ``image`` (uint16 H×W×4) as four channel files in format ``fmt``."""
    ext, dtype = FORMATS[fmt]
    for index, channel in enumerate(CHANNELS):
        plane = image[..., index]
        if dtype == np.uint8:
            plane = (plane // 257).astype(np.uint8)
        write_channel(folder / f"{image_id}_{channel}{ext}", plane)


def expected(image: np.ndarray, fmt: str) -> np.ndarray:
    return (image // 257 * 257).astype(np.uint16) if fmt in ("png8", "tif8", "jpg") else image


@pytest.fixture(scope="module")
def synthetic_image() -> np.ndarray:
    return synthesize_image((160, 224), np.random.default_rng(7)).image


@pytest.mark.parametrize("fmt", ["png16", "png8", "tif", "tif8", "tif.gz", "jpg"])
def test_round_trip_every_format(tmp_path: Path, fmt: str, synthetic_image: np.ndarray) -> None:
    image = synthetic_image
    write_channels(tmp_path, "img-1", image, fmt)

    found = scan_images(tmp_path)
    read = found.read("img-1")

    assert found.ids == ["img-1"] and found.unusable == {}
    assert read.dtype == np.uint16 and read.shape == (160, 224, 4)
    if fmt == "jpg":  # lossy: each channel lands in its own plane, within JPEG error
        levels = np.abs(read.astype(int) - expected(image, fmt).astype(int)) / 257
        assert levels.mean() < 2 and np.percentile(levels, 99) < 10
        for index in range(4):  # each tint was read back from its own colour plane(s)
            distances = [np.abs(read[..., index].astype(int) - image[..., j]).mean() for j in range(4)]
            assert int(np.argmin(distances)) == index
    else:
        np.testing.assert_array_equal(read, expected(image, fmt))


def test_round_trip_real_samples(tmp_path: Path, hpa_real: Path) -> None:
    real = scan_images(hpa_real / "images")
    assert len(real.ids) == 4 and real.unusable == {}
    image = real.read(real.ids[0])
    raw_green = cv2.imread(str(hpa_real / "images" / f"{real.ids[0]}_green.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (2048, 2048, 4) and image.dtype == np.uint16
    np.testing.assert_array_equal(image[..., 1], raw_green.astype(np.uint16) * 257)
    crop = image[:512, :640]
    for fmt in ("png16", "tif", "tif.gz"):
        write_channels(tmp_path / fmt, "real", crop, fmt)
        np.testing.assert_array_equal(scan_images(tmp_path / fmt).read("real"), crop)


def test_incomplete_sets_are_reported_by_name(tmp_path: Path, caplog) -> None:
    write_channels(tmp_path, "whole", smooth_image(2), "png16")
    write_channels(tmp_path, "part", smooth_image(3), "png16")
    (tmp_path / "part_yellow.png").unlink()
    (tmp_path / "part_blue.png").unlink()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".whole_red.png.12ab.tmp.png").write_bytes(b"")  # a writer's leftover

    with caplog.at_level(logging.WARNING):
        found = scan_images(tmp_path)

    assert found.ids == ["whole"]
    assert found.unusable == {"part": "missing channel(s) blue, yellow"}
    assert "part: unusable image, missing channel(s) blue, yellow" in caplog.text
    with pytest.raises(InputError, match="part: missing channel.*blue, yellow"):
        found.read("part")


def test_lossless_format_wins_over_jpg(tmp_path: Path) -> None:
    image = smooth_image(4)
    write_channels(tmp_path, "both", image, "jpg")
    write_channels(tmp_path, "both", image, "png16")
    np.testing.assert_array_equal(scan_images(tmp_path).read("both"), image)


def test_channels_of_different_sizes(tmp_path: Path) -> None:
    write_channels(tmp_path, "img", smooth_image(5), "png16")
    cv2.imwrite(str(tmp_path / "img_green.png"), np.zeros((50, 60), np.uint16))
    with pytest.raises(InputError, match=r"img: channels differ in size \(red 128x96, green 60x50"):
        scan_images(tmp_path).read("img")


@pytest.mark.parametrize("name, content, message", [
    ("x_red.png", b"\x89PNG\r\n\x1a\n garbage", "corrupt or truncated image"),
    ("x_red.tif", b"II*\x00garbage", "corrupt or truncated TIFF"),
    ("x_red.tif.gz", b"\x1f\x8b\x08\x00garbage", "corrupt or truncated gzip"),
    ("x_red.jpg", b"\xff\xd8\xff\xe0garbage", "corrupt or truncated JPEG"),
])
def test_corrupt_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as error:
        read_channel(tmp_path / name)
    assert name in str(error.value)


@pytest.mark.parametrize("fmt, name", [("png16", "img_red.png"), ("tif.gz", "img_red.tif.gz"),
                                       ("jpg", "img_red.jpg")])
def test_truncated_files(tmp_path: Path, fmt: str, name: str) -> None:
    write_channels(tmp_path, "img", smooth_image(6), fmt)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_channel(path)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint32])
def test_unsupported_bit_depth(tmp_path: Path, dtype) -> None:
    tifffile.imwrite(tmp_path / "img_red.tif", np.ones((8, 8), dtype))
    with pytest.raises(InputError, match=f"unsupported bit depth.*{np.dtype(dtype).name}"):
        read_channel(tmp_path / "img_red.tif")


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        scan_images(tmp_path / "absent")
    with pytest.raises(InputError, match="cannot read"):
        read_channel(tmp_path / "absent_red.png")
    tifffile.imwrite(tmp_path / "stack_red.tif", np.ones((5, 8, 8), np.uint16))
    with pytest.raises(InputError, match="5 pages; a channel file holds one plane"):  # before any decoding
        read_channel(tmp_path / "stack_red.tif")


def test_label_images_keep_more_than_255_cells(tmp_path: Path) -> None:
    labels = np.arange(600, dtype=np.int64).reshape(20, 30)
    write_label_image(tmp_path / "cells.png", labels)
    back = read_label_image(tmp_path / "cells.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(ValueError, match="0..65535"):
        write_label_image(tmp_path / "big.png", np.full((2, 2), 70000))
    assert not (tmp_path / "big.png").exists()


def test_hpa_uint8_masks_read(hpa_real: Path) -> None:
    mask = read_label_image(hpa_real / "masks" / "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0_cellmask.png")
    assert mask.shape == (2048, 2048) and mask.dtype == np.uint8
    np.testing.assert_array_equal(np.unique(mask), np.arange(20))


def test_writes_are_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.png"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert list((tmp_path / "sub").iterdir()) == []
    write_png(target, np.full((4, 4), 1234, np.uint16))
    assert cv2.imread(str(target), cv2.IMREAD_UNCHANGED)[0, 0] == 1234
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red: the file must hold it as red, not as OpenCV's blue
    write_png(tmp_path / "rgb.png", rgb)
    assert cv2.imread(str(tmp_path / "rgb.png"))[0, 0].tolist() == [0, 0, 200]  # OpenCV reads BGR
    for bad in (np.zeros((4, 4, 3), np.uint16), np.zeros((4, 4), np.float32)):
        with pytest.raises(ValueError):
            write_png(target, bad)
