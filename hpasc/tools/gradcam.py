"""Grad-CAM heatmaps of a trained checkpoint over chosen cells: where in a cell the model looks
when it scores a class.

``hpasc-gradcam --checkpoint C --dataset D --limit 8 --out DIR`` writes, for each cell
and class, ``DIR/{cell_id}_c{class}.png`` (the heatmap over the cell's colour composite, the same
view as ``hpasc-cellstore export``), an ``index.html`` that shows them in a table, and a
manifest. A cell's classes are ``--classes`` if given, else its image-level labels, else the
class it scores highest. The model sees each tile exactly as in inference
(:func:`hpasc.models.scoring.prepare_batch`); :func:`cam_for_tile` is the computation alone.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from hpasc.cellstore import CellStore, open_cells
from hpasc.core import atomic, runtime
from hpasc.core.classes import CLASS_NAMES, parse_labels
from hpasc.core.images import composite, write_png
from hpasc.core.weblinks import href
from hpasc.models.precision import Precision
from hpasc.models.registry import architecture
from hpasc.models.runner import ModelRunner
from hpasc.models.scoring import prepare_batch
from hpasc.models.spec import ModelSpec

log = logging.getLogger(__name__)

def target_layer(model: nn.Module, spec: ModelSpec, layer: str | None) -> nn.Module:
    """The module of ``model`` that Grad-CAM explains: ``layer`` by its name in the architecture's
    registry entry (None: the entry's default); InputError for a name the entry lacks."""
    return architecture(spec.arch).cam_layer(model, layer)


def output_column(spec: ModelSpec, class_index: int) -> int:
    """The model output that scores ``class_index``; ValueError if the model has none."""
    if class_index not in spec.outputs:
        raise ValueError(f"the model has no output for class {class_index} ({CLASS_NAMES[class_index]})")
    return spec.outputs.index(class_index)


def cam_for_tile(model: nn.Module, spec: ModelSpec, tile: np.ndarray, class_index: int,
                 layer: str | None = None) -> np.ndarray:
    """The Grad-CAM heatmap of ``class_index`` for a (C, S, S) integer tile: an (S, S) float32
    array in [0, 1] (1 where the evidence for the class is strongest).

    ``model`` is left in eval mode. ValueError if the model has no output for the class.
    """
    # Imported here: the package pulls in torchvision and matplotlib (seconds), which a command
    # refused for a bad argument should not wait for.
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    column = output_column(spec, class_index)
    device = next(model.parameters()).device
    batch = prepare_batch(torch.from_numpy(np.ascontiguousarray(tile))[None], spec, device)
    with GradCAM(model=model, target_layers=[target_layer(model, spec, layer)]) as cam:
        heat = cam(input_tensor=batch, targets=[ClassifierOutputTarget(column)])[0]
    # The package gives the heatmap at the model's input size; show it at the tile's own size.
    size = tile.shape[-1]
    if heat.shape != (size, size):
        heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def overlay(tile: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The (S, S, 3) uint8 RGB view of ``heat`` over the tile's colour composite."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # see cam_for_tile

    rgb = composite(tile).astype(np.float32) / 255
    return show_cam_on_image(rgb, heat, use_rgb=True)


def choose_rows(store: CellStore, cell_ids: Sequence[str] | None, limit: int | None) -> list[int]:
    """The table rows of ``cell_ids``, or of the first ``limit`` kept cells; InputError naming
    unknown cell ids."""
    if cell_ids is None:
        return np.flatnonzero(store.table["keep"].to_numpy(bool))[:limit].tolist()
    return store.require(cell_ids)


def classes_of(labels: object, scores: np.ndarray, spec: ModelSpec,
               wanted: Sequence[int] | None) -> list[int]:
    """The classes to explain for a cell: ``wanted``, else its image-level ``labels``, else the
    class the model scores highest among its own outputs."""
    if wanted:
        return list(wanted)
    return parse_labels(labels) or [max(spec.outputs, key=lambda c: scores[c])]


@dataclass(frozen=True)
class Heatmap:
    """One written heatmap: the cell, the class, the model's probability for it, the file name."""

    cell_id: str
    class_index: int
    score: float
    file: str


def _row_html(heatmap: Heatmap) -> str:
    link, file = href(heatmap.file), html.escape(heatmap.file)
    name = html.escape(CLASS_NAMES[heatmap.class_index])
    return (f"<tr><td>{html.escape(heatmap.cell_id)}</td><td>{heatmap.class_index} {name}</td>"
            f"<td>{heatmap.score:.3f}</td>"
            f"<td><a href=\"{link}\"><img src=\"{link}\" width=\"256\" alt=\"{file}\"></a></td></tr>")


def index_html(heatmaps: Sequence[Heatmap], title: str) -> str:
    """A page with one table row per heatmap: cell id, class, score and the image."""
    title = html.escape(title)
    rows = "\n".join(_row_html(h) for h in heatmaps)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n"
            f"<body><h1>{title}</h1>\n<table border=\"1\">\n"
            f"<tr><th>cell</th><th>class</th><th>score</th><th>Grad-CAM</th></tr>\n{rows}\n"
            f"</table></body></html>\n")


@dataclass(frozen=True)
class GradcamRun:
    """Which cells of a dataset to explain (``cells`` by id, else the first ``limit`` kept ones),
    for which classes (None: each cell's own, see :func:`classes_of`), at which layer, into ``out``."""

    checkpoint: Path
    dataset: Path
    out: Path
    cells: tuple[str, ...] = ()
    limit: int | None = None
    classes: tuple[int, ...] | None = None
    layer: str | None = None
    precision: Precision = Precision()


def explain_cells(run: GradcamRun, options: runtime.CommonOptions) -> list[Heatmap]:
    """Write the run's heatmaps and their ``index.html``; returns the heatmaps."""
    runner = ModelRunner.load(run.checkpoint, runtime.resolve_device(options.device), run.precision)
    store = open_cells(run.dataset)
    rows = choose_rows(store, list(run.cells) or None, run.limit)
    runner.check_tiles(store)
    target_layer(runner.model, runner.spec, run.layer)  # a layer the model lacks is refused before any work
    heatmaps = [heatmap for row in options.bar(rows, unit="cell", desc="gradcam")
                for heatmap in _explain_cell(runner, store, row, run)]
    atomic.write_text(run.out / "index.html", index_html(heatmaps, f"Grad-CAM of {run.checkpoint.name}"))
    log.info("wrote %d heatmaps of %d cells to %s", len(heatmaps), len(rows), run.out)
    return heatmaps


def _explain_cell(runner: ModelRunner, store: CellStore, row: int, run: GradcamRun) -> list[Heatmap]:
    tile = store[row]
    cell_id, labels = store.table["cell_id"].iat[row], store.table["labels"].iat[row]
    scores = runner.score([torch.from_numpy(tile)[None]])[0]
    heatmaps = []
    for class_index in classes_of(labels, scores, runner.spec, list(run.classes) if run.classes else None):
        if class_index not in runner.spec.outputs:
            # Negative, for a model that derives it from the other classes: nothing to explain.
            log.warning("%s: the model has no output for class %d (%s), skipped", cell_id, class_index,
                        CLASS_NAMES[class_index])
            continue
        heat = cam_for_tile(runner.model, runner.spec, tile, class_index, run.layer)
        name = f"{cell_id}_c{class_index}.png"
        write_png(run.out / name, overlay(tile, heat))
        heatmaps.append(Heatmap(cell_id, class_index, float(scores[class_index]), name))
    return heatmaps
