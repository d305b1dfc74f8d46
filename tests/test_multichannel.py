"""One multi-channel TIFF / OME-TIFF per image: the channel order from --channels or the OME names,
the same masks, tiles and scores as the four-file layout, and bad channel orders as one-line errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from hpasc.cellstore import open_cells
from hpasc.core.errors import InputError
from hpasc.core.image_folder import scan_images
from hpasc.core.images import CHANNELS, read_label_image
from hpasc.core.multichannel import parse_channel_order
from hpasc.submission.check import read_image_sizes
from tests.conftest import assert_one_line_error, run_script
from tests.test_infer import checkpoint  # noqa: F401 (a small trained model)

# The planes of the test files are stored out of order: nucleus first, then microtubules, ER, protein.
FILE_ORDER = ("blue", "red", "yellow", "green")
OME_NAMES = ("DAPI", "Microtubules", "ER", "Protein")


def image(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, (*shape, 4), dtype=np.uint16)


def planes_in_file_order(rgby: np.ndarray, order: tuple[str, ...] = FILE_ORDER) -> np.ndarray:
    return np.stack([rgby[..., CHANNELS.index(c)] for c in order])


def write_ome(path: Path, rgby: np.ndarray, names: tuple[str, ...] = OME_NAMES) -> None:
    tifffile.imwrite(path, planes_in_file_order(rgby), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": list(names)}})


def test_channel_orders() -> None:
    assert parse_channel_order("R,G,B,Y") == CHANNELS
    assert parse_channel_order(" b, red ,-,Y,g") == ("blue", "red", None, "yellow", "green")
    for text, message in [("R,G,B", "yellow is missing"), ("R,R,G,B,Y", "red appears 2 times"),
                          ("R,G,B,Q", "'q' is not one of R, G, B, Y"), ("", "'' is not one of")]:
        with pytest.raises(InputError, match=message):
            parse_channel_order(text)


def test_ome_names_plain_tiff_and_interleaved_layouts(tmp_path: Path, caplog) -> None:
    rgby = {i: image(i) for i in range(5)}
    write_ome(tmp_path / "ome.ome.tiff", rgby[0])
    tifffile.imwrite(tmp_path / "plain.tif", planes_in_file_order(rgby[1]), photometric="minisblack")
    tifffile.imwrite(tmp_path / "interleaved.tif", np.moveaxis(planes_in_file_order(rgby[2]), 0, -1),
                     photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "eight_bit.tif", (planes_in_file_order(rgby[3]) >> 8).astype(np.uint8),
                     photometric="minisblack")
    for channel in CHANNELS:  # a four-file image beside them
        tifffile.imwrite(tmp_path / f"files_{channel}.tif", rgby[4][..., CHANNELS.index(channel)])

    with caplog.at_level(logging.INFO):
        found = scan_images(tmp_path, parse_channel_order("B,R,Y,G"))
    assert found.ids == ["eight_bit", "files", "interleaved", "ome", "plain"] and not found.unusable
    assert f"{tmp_path}: 5 images, 1 as four channel files, 4 as multi-channel TIFF (planes B,R,Y,G from " \
           "--channels)" in caplog.text
    for name, seed in [("ome", 0), ("plain", 1), ("interleaved", 2), ("files", 4)]:
        np.testing.assert_array_equal(found.read(name), rgby[seed])
    np.testing.assert_array_equal(found.read("eight_bit"), (rgby[3] >> 8) * 257)

    caplog.clear()
    with caplog.at_level(logging.INFO):
        by_names = scan_images(tmp_path)  # only the OME file says its order itself
    np.testing.assert_array_equal(by_names.read("ome"), rgby[0])
    assert "ome" in by_names.ids and "from OME channel names" in caplog.text
    assert "plain.tif: 4 planes and no OME channel names; say which plane is which with --channels" in \
        by_names.unusable["plain"]
    assert read_image_sizes(tmp_path, parse_channel_order("B,R,Y,G")) == {
        i: (64, 48) for i in ["eight_bit", "files", "interleaved", "ome", "plain"]}


def test_unusable_stacks_are_reported_by_name(tmp_path: Path, caplog) -> None:
    rgby = image(9)
    tifffile.imwrite(tmp_path / "five.tif", np.concatenate([planes_in_file_order(rgby), rgby[None, ..., 0]]),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "three.tif", planes_in_file_order(rgby)[:3], photometric="minisblack")
    tifffile.imwrite(tmp_path / "zstack.tif", np.stack([planes_in_file_order(rgby)] * 3), photometric="minisblack",
                     metadata={"axes": "ZCYX"})
    write_ome(tmp_path / "odd.ome.tif", rgby, names=("a", "b", "c", "d"))
    write_ome(tmp_path / "good.ome.tif", rgby)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")

    with caplog.at_level(logging.WARNING):
        found = scan_images(tmp_path)
    assert found.ids == ["good"]
    assert "five.tif: 5 planes and no OME channel names" in found.unusable["five"]
    assert "three.tif: 3 plane(s); an image needs 4" in found.unusable["three"]
    assert "zstack.tif: layout ZCYX" in found.unusable["zstack"] and "maximum projection" in found.unusable["zstack"]
    assert "OME channel names (a, b, c, d) do not say which plane is R, G, B and Y" in found.unusable["odd"]
    assert "broken.tif: corrupt or unreadable TIFF" in found.unusable["broken"]
    assert "three: unusable image" in caplog.text
    np.testing.assert_array_equal(scan_images(tmp_path, parse_channel_order("B,R,Y,G,-")).read("five"), rgby)

    with pytest.raises(InputError, match=r"no usable image in .* \(6 unusable; broken: .*broken.tif"):
        scan_images(tmp_path, parse_channel_order("R,G,B,Y,-,-"))


def test_four_files_win_over_a_stack_of_the_same_image(tmp_path: Path, caplog) -> None:
    rgby = image(3)
    write_ome(tmp_path / "x.ome.tif", image(4))
    for channel in CHANNELS:
        tifffile.imwrite(tmp_path / f"x_{channel}.tif", rgby[..., CHANNELS.index(channel)])
    with caplog.at_level(logging.WARNING):
        found = scan_images(tmp_path)
    np.testing.assert_array_equal(found.read("x"), rgby)
    assert "x: has both four channel files and x.ome.tif; reading the channel files" in caplog.text


@pytest.fixture(scope="module")
def layouts(checkpoint: Path, tmp_path_factory) -> tuple[Path, Path, Path]:  # noqa: F811
    """The same three synthetic images as four PNGs each, as one OME-TIFF each with its planes out
    of order, and as plain TIFFs without names."""
    root = tmp_path_factory.mktemp("layouts")
    source = scan_images(checkpoint.parents[1] / "syn")
    pngs, ome, plain = root / "pngs", root / "ome", root / "plain"
    for folder in (pngs, ome, plain):
        folder.mkdir()
    for image_id in source.ids[:3]:
        for path in source.source(image_id).files:
            shutil.copy(path, pngs)
        rgby = source.read(image_id)
        write_ome(ome / f"{image_id}.ome.tif", rgby)
        tifffile.imwrite(plain / f"{image_id}.tif", planes_in_file_order(rgby), photometric="minisblack")
    return pngs, ome, plain


def test_an_ome_tiff_gives_the_same_masks_tiles_and_scores(checkpoint: Path, layouts: tuple[Path, Path, Path],  # noqa: F811
                                                           tmp_path: Path) -> None:
    pngs, ome, plain = layouts
    for name, folder in (("pngs", pngs), ("ome", ome)):
        # --channels would override the OME names; on the four-file layout it only warns.
        channels = ("--channels", "R,G,B,Y") if name == "pngs" else ()
        for args in (("segmentator.py", "-i", folder, "-c", tmp_path / name / "cells", "--backend", "classical",
                      *channels),
                     ("image_cutter.py", "-i", folder, "-m", tmp_path / name / "cells", "-o", tmp_path / name / "set",
                      "--no-labels", "--size", "32"),
                     ("infer.py", "-i", folder, "-e", checkpoint, "-o", tmp_path / name / "submission.csv",
                      "--cells-out", tmp_path / name / "cells.csv", "--backend", "classical")):
            result = run_script(*args, "--workers", "2", "--no-progress")
            assert result.returncode == 0, result.stderr
            if args[0] == "segmentator.py" and name == "pngs":
                assert "--channels R,G,B,Y has no effect" in result.stderr
    assert "3 images, 3 as multi-channel TIFF (planes B,R,Y,G from OME channel names)" in result.stderr
    result = run_script("segmentator.py", "-i", plain, "-c", tmp_path / "plain" / "cells", "--backend", "classical",
                        "--channels", "b,r,y,g", "--workers", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    masks = sorted(p.name for p in (tmp_path / "pngs" / "cells").glob("*.png"))
    assert len(masks) == 3
    for name in masks:
        expected = read_label_image(tmp_path / "pngs" / "cells" / name)
        for layout in ("ome", "plain"):
            np.testing.assert_array_equal(read_label_image(tmp_path / layout / "cells" / name), expected, layout)
    stores = [open_cells(tmp_path / name / "set") for name in ("pngs", "ome")]
    pd.testing.assert_frame_equal(stores[0].table, stores[1].table)
    assert len(stores[0]) > 5
    for i in range(len(stores[0])):
        np.testing.assert_array_equal(stores[0][i], stores[1][i])
    assert (tmp_path / "ome" / "submission.csv").read_text() == (tmp_path / "pngs" / "submission.csv").read_text()
    assert (tmp_path / "ome" / "cells.csv").read_text() == (tmp_path / "pngs" / "cells.csv").read_text()


def test_bad_channel_orders(layouts: tuple[Path, Path, Path], tmp_path: Path) -> None:
    segment = ("segmentator.py", "-i", layouts[2], "-c", tmp_path / "cells", "--backend", "classical",
               "--no-progress")
    assert_one_line_error(run_script(*segment), "no usable image", "4 planes and no OME channel names",
                          "--channels")
    assert_one_line_error(run_script(*segment, "--channels", "R,G,B,Y,-"), "4 planes, but --channels names 5")
    result = run_script(*segment, "--channels", "R,G,G,Y")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "segmentator.py: error: argument --channels: channel order 'R,G,G,Y': green appears 2 times; each of " \
           "R, G, B, Y must appear once" in result.stderr
    assert not (tmp_path / "cells").exists()
