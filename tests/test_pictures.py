"""infer.py --overlays: each cell of a synthetic image is drawn in the colour of its top class
(grey below the threshold), checked at pixels inside known cells; the index page renders in
headless Chromium with no network (its screenshot lands in the test's tmp folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

from hpasc.core.images import read_label_image
from hpasc.core.overlays import CLASS_COLOURS, GREY, SHADE_FLOOR
from hpasc.stages.infer.cell_table import read_cell_table
from tests.conftest import run_script
from tests.test_infer import checkpoint  # noqa: F401 (a small trained model)
from tests.test_label_tool import Browser, browser  # noqa: F401 (headless Chromium)

THRESHOLD = 0.3


def test_cells_are_drawn_in_their_top_class_colour(checkpoint: Path, tmp_path: Path,  # noqa: F811
                                                    browser: Browser) -> None:  # noqa: F811
    images = tmp_path / "images"
    shutil.copytree(checkpoint.parents[1] / "syn", images, ignore=shutil.ignore_patterns("truth", "*.csv"))
    pictures, masks, table_path = tmp_path / "pictures", tmp_path / "masks", tmp_path / "cells.csv"
    result = run_script("infer.py", "-i", images, "-e", checkpoint, "--cells-out", table_path, "--overlays", pictures,
                        "--overlay-threshold", str(THRESHOLD), "--save-masks", masks, "--backend", "classical",
                        "--workers", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    table = read_cell_table(table_path)
    checked = {"class": 0, "grey": 0}
    for image_id, cells in table.groupby("image_id"):
        whole = cv2.cvtColor(cv2.imread(str(pictures / f"{image_id}.png")), cv2.COLOR_BGR2RGB)
        mask = read_label_image(masks / f"{image_id}.png")
        assert whole.shape[0] >= mask.shape[0] and whole.shape[1] > mask.shape[1]  # the legend beside
        picture = whole[:mask.shape[0], :mask.shape[1]]
        edges = find_boundaries(mask, mode="inner")
        for cell in cells.itertuples():
            confident = cell.top1_conf >= THRESHOLD
            colour = np.array(CLASS_COLOURS[cell.top_class] if confident else GREY)
            outline = picture[edges & (mask == cell.mask_id)]
            assert (outline == colour).all(), (image_id, cell.mask_id)
            inside = cv2.erode((mask == cell.mask_id).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            if confident:
                # A filled pixel is the colour itself, shaded: one factor in [SHADE_FLOOR, 1] for all
                # three channels, so that its hue is the legend's whatever the stain under it (issue 38,
                # item 11).
                bright = colour >= 60
                shade = picture[inside][:, bright].astype(float) / colour[bright]
                assert ((shade > SHADE_FLOOR - 0.02) & (shade < 1.02)).all(), (image_id, cell.mask_id)
                assert (np.ptp(shade, axis=1) < 0.05).all(), (image_id, cell.mask_id)
            else:  # not filled: the stain's own colours, not a grey that a dim white fill would match
                assert np.ptp(picture[inside].astype(int), axis=1).max() > 20, (image_id, cell.mask_id)
            checked["class" if confident else "grey"] += 1
    assert checked["class"] > 10 and checked["grey"] > 0, checked
    index = pictures / "index.html"
    assert (pictures / "confidences.png").is_file() and index.is_file()
    browser.visit(index.as_uri())
    loaded = browser.script("return [...document.images].every(i => i.complete && i.naturalWidth > 0) "
                            "&& document.images.length;")
    assert loaded == len(table["image_id"].unique()) + 1  # a thumbnail per image and the histogram
    browser.screenshot(tmp_path / "overlay_index.png")
    assert (tmp_path / "overlay_index.png").read_bytes().startswith(b"\x89PNG")


def test_segmentator_pictures_outline_every_cell(tmp_path: Path) -> None:
    made = run_script("-m", "hpasc.commands.synthetic", "-o", tmp_path / "syn", "-n", "2", "--size", "256",
                      "--seed", "8",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    cells = tmp_path / "cells"
    for pictures in (tmp_path / "first", tmp_path / "later"):  # later: drawn from the masks already made
        result = run_script("segmentator.py", "-i", tmp_path / "syn", "-c", cells, "--backend", "classical",
                            "--overlays", pictures, "--workers", "2", "--no-progress")
        assert result.returncode == 0, result.stderr
        for mask_path in cells.glob("*.png"):
            mask = read_label_image(mask_path)
            picture = cv2.cvtColor(cv2.imread(str(pictures / mask_path.name)), cv2.COLOR_BGR2RGB)
            edges = find_boundaries(mask, mode="inner")
            assert edges.any() and (picture[edges] == 255).all()
            assert not (picture[~edges & (mask == 0)] == 255).all(axis=1).any()
        page = (pictures / "index.html").read_text()
        assert all(p.name in page for p in cells.glob("*.png"))
    assert "already segmented" in result.stderr


def test_the_legend_shows_every_class_name_whole() -> None:
    """The legend was cut at "17 Vesicles and punctate cytosolic pat" (issue 38, item 11)."""
    from hpasc.core.classes import CLASS_NAMES
    from hpasc.core.overlays import LEGEND_FONT, LEGEND_SCALE, LEGEND_TEXT_X, legend

    strip = legend(100)
    for k, name in enumerate(CLASS_NAMES):
        width = cv2.getTextSize(f"{k} {name}", LEGEND_FONT, LEGEND_SCALE, 1)[0][0]
        assert LEGEND_TEXT_X + width < strip.shape[1]
        y = 8 + 24 * k
        assert strip[y:y + 17, LEGEND_TEXT_X + width - 8:LEGEND_TEXT_X + width].max() > 100, name  # its last glyph
        assert (strip[y + 8, 17] == CLASS_COLOURS[k]).all()  # a filled swatch
    below = 8 + 24 * len(CLASS_NAMES)  # low confidence: a grey outline, as such cells are drawn
    assert (strip[below + 8, 8] == GREY).all() and (strip[below + 8, 17] == 0).all()


def test_a_group_panel_shows_the_other_groups_visibly_and_names_them() -> None:
    """In a --groups panel the other groups' cells are a light grey on black, with a legend entry."""
    import pandas as pd

    from hpasc.tools.cell_map import CellMap, map_figure

    points = np.random.default_rng(0).normal(size=(6, 2))
    figure = map_figure(CellMap(np.arange(6), points, 6), pd.Series(["Nucleoplasm"] * 3 + ["Cytosol"] * 3),
                        pd.Series(["a", "a", "b", "b", "b", "a"]))
    panels = figure.axes
    assert [axis.get_title() for axis in panels] == ["all cells: 6 cells", "a: 3 cells", "b: 3 cells"]
    for axis in panels[1:]:
        labels = [text.get_text() for text in axis.get_legend().get_texts()]
        assert labels[0] == "other groups"
        grey = axis.collections[0].get_facecolor()[0][:3]
        assert min(grey) >= 0.6  # light: seen on the black background
    assert "other groups" not in [text.get_text() for text in panels[0].get_legend().get_texts()]
