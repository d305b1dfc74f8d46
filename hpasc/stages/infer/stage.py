"""infer.py's run: test images → cells → ensemble scores → submission.csv.

Pipelined: the :class:`~hpasc.segmentation.segmenter.Segmenter` (the one segmentator.py uses)
segments each image in worker processes (with HPA's networks on batches here), and the same worker
cuts its cells with image_cutter.py's own function (tiles, border and outlier factors) and
RLE-encodes the masks (:class:`~hpasc.stages.infer.jobs.CellCutter`). The tiles come back in a
shared-memory slot that this process keeps mapped (page-locked on CUDA, so the GPU copies them
itself); the pipes carry only the cells' rows and masks. A thread of the main process scores the
tiles with the ensemble (on the GPU when there is one) and post-processes them, image by image,
while the main thread feeds the segmentation and the workers already work on the next images: at
most a bounded window of images is in flight, which bounds memory (a 3072² image with 100 cells
holds ~200 MB of 512 px tiles). An image that fails (a missing channel, an unreadable file) is
logged and gets a row without predictions; the others are predicted.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from hpasc.cells.provenance import record_provenance
from hpasc.core import __version__, atomic, runtime
from hpasc.core.errors import InputError
from hpasc.core.image_folder import ImageFolder
from hpasc.core.images import read_image_size
from hpasc.core.shared_arrays import SlotRing
from hpasc.core.workers import process_pool
from hpasc.models.pinning import page_locker
from hpasc.segmentation.segmenter import Delivery, Segmenter
from hpasc.stages.infer.cell_table import CellTable, image_rows
from hpasc.stages.infer.ensemble import LoadedEnsemble
from hpasc.stages.infer.ensemble_file import Ensemble, WeightingSettings, read_ensemble
from hpasc.stages.infer.jobs import CellCutter, ImageCells
from hpasc.stages.infer.pictures import PredictionPictures
from hpasc.stages.infer.weighting import weight_scores
from hpasc.stages.infer.settings import InferSettings
from hpasc.submission.rows import SampleSubmission, prediction_string, write_submission

log = logging.getLogger(__name__)

CELLS_PER_SLOT = 48
"""An image's tiles travel in a shared-memory slot when it has at most this many cells (HPA's images
hold 10-40; 96 MiB at 512 px); a larger one's in a block of its own, ~15 ms more per 40 MB."""
SCORING_QUEUE = 2
"""Images handed to the scoring thread and not yet scored, at most: enough to keep the GPU busy
while the main process runs the segmentation, few enough to hold few slots."""


class ScoringSink:
    """Scores each image's cells with the ensemble and keeps its submission row.

    The scoring runs on a thread of its own (on CUDA, on a stream of its own), images in the order
    they come: the main process hands an image over and goes on feeding the segmentation while the
    GPU scores, instead of waiting for it; it waits only when :data:`SCORING_QUEUE` images are
    queued. Use it as a context manager: leaving waits for the last image (and raises a scoring
    error), and is over before the tiles' slots are gone.
    """

    def __init__(self, ensemble: LoadedEnsemble, settings: InferSettings, weighting: WeightingSettings,
                 table: CellTable | None = None) -> None:
        self.ensemble, self.settings, self.weighting = ensemble, settings, weighting
        self.table = table
        self.pictures = None if settings.overlays is None else PredictionPictures(settings.overlays,
                                                                                  settings.overlay_threshold)
        self.rows: dict[str, tuple[int, int, str]] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self._queued: collections.deque[Future] = collections.deque()
        self._stream = None
        if ensemble.device.type == "cuda":
            self._stream = torch.cuda.Stream(ensemble.device)
            self._stream.wait_stream(torch.cuda.current_stream(ensemble.device))  # the models' weights are there

    def __enter__(self) -> ScoringSink:
        return self

    def __exit__(self, kind, *exc) -> None:
        self._thread.shutdown(wait=True, cancel_futures=kind is not None)
        if kind is None:
            while self._queued:
                self._queued.popleft().result()

    def __call__(self, image_id: str, cells: ImageCells) -> Future:
        """Queue the image's scoring; the future completes once its tiles are no longer needed."""
        while len(self._queued) >= SCORING_QUEUE or (self._queued and self._queued[0].done()):
            self._queued.popleft().result()  # a scoring error stops the run here
        scored = self._thread.submit(self._predict, image_id, cells)
        self._queued.append(scored)
        return scored

    def _predict(self, image_id: str, cells: ImageCells) -> None:
        with torch.cuda.stream(self._stream), cells.tiles.opened() as tiles:  # no stream: the CPU's
            raw, embeddings = self.score(tiles)
        scores = raw
        if self.settings.weighting and len(raw):
            scores = weight_scores(raw, cells.cells["border"].to_numpy(), cells.cells["outlier"].to_numpy(),
                                 self.weighting)
        self.rows[image_id] = (cells.width, cells.height, prediction_string(cells.masks, scores))
        if self.table is not None:
            self.table.add(image_rows(cells.cells, raw, scores), embeddings)
        if self.pictures is not None and cells.preview is not None:
            self.pictures.add(image_id, cells.preview, cells.cells["mask_id"].to_numpy(), scores)

    def score(self, tiles: tuple[np.ndarray, ...]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The cells' ensemble probabilities, and each member's embeddings when the table keeps them."""
        keep = self.table is not None and bool(self.table.members)
        parts, vectors = [np.zeros((0, 19), np.float32)], []
        size = self.settings.batch_size
        for start in range(0, len(tiles[0]), size):
            batch = [torch.from_numpy(t[start:start + size]) for t in tiles]
            if keep:
                probabilities, embeddings = self.ensemble.with_embeddings(batch)
                vectors.append(embeddings)
            else:
                probabilities = self.ensemble(batch)
            parts.append(probabilities)
        if not keep:
            return np.concatenate(parts), None
        widths = self.ensemble.embedding_widths
        return np.concatenate(parts), [np.concatenate([np.zeros((0, w), np.float16), *(v[j] for v in vectors)])
                                       for j, w in enumerate(widths)]


def image_size(folder: Path, image_id: str, sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(width, height) of an image that failed: from the sample submission, else from the header
    of any of its files that has one, else (0, 0)."""
    if image_id in sizes:
        return sizes[image_id]
    name = glob.escape(image_id)
    for path in sorted([*folder.glob(f"{name}_*"), *folder.glob(f"{name}.*")]):
        try:
            return read_image_size(path)
        except (InputError, OSError):
            continue
    return 0, 0


def _clean_outputs(out: Path | None, settings: InferSettings) -> None:
    for path in filter(None, (out, settings.cells_out)):
        atomic.remove_abandoned(path.parent, of=path.name)
    for folder in filter(None, (settings.save_masks, settings.overlays)):
        atomic.remove_abandoned(folder)


def infer_folder(folder: ImageFolder, ensemble_file: Path, out: Path | None, sample: SampleSubmission | None,
                 settings: InferSettings, options: runtime.CommonOptions) -> dict[str, str]:
    """Write the submission (``out``; None: none) for the images of ``folder`` (in ``sample``'s
    order, when given) and the cell table when ``settings`` asks; returns {failed image: reason}."""
    ensemble = read_ensemble(ensemble_file)
    segmenter = Segmenter(settings.segmentation, options)
    _clean_outputs(out, settings)
    order, sizes = (sample.order, sample.sizes) if sample is not None else (None, {})
    ids = order if order is not None else sorted(folder.ids + list(folder.unusable))
    if not ids:
        raise InputError(f"{folder.root}: no images to predict")
    readable = set(folder.ids)
    present = [i for i in ids if i in readable]
    failures = {i: folder.unusable[i] for i in ids if i in folder.unusable}
    absent = [i for i in ids if i not in readable and i not in folder.unusable]
    _say_absent(absent, ids, folder.root)
    device = torch.device(runtime.resolve_device(options.device))
    loaded = LoadedEnsemble(ensemble, device, settings.precision, settings.tta)
    loaded.check_segmentation(segmenter.provenance, settings.allow_other_segmentation)
    log.info("%d images, %d checkpoint%s, %s segmentation, tiles %s, on %s", len(ids), len(ensemble.members),
             "" if len(ensemble.members) == 1 else "s",
             segmenter.backend.name,
             "; ".join(r.describe() for r in loaded.tile_specs), device)
    if settings.save_masks is not None:  # every mask is rewritten: the record is the run's own
        record_provenance(settings.save_masks, segmenter.provenance, keeps_others=False)
    table = None if settings.cells_out is None else CellTable(
        [str(m.checkpoint) for m in ensemble.members] if settings.embeddings else [],
        _provenance(ensemble, segmenter, loaded))
    sink = ScoringSink(loaded, settings, ensemble.postprocessing, table)
    cutter = CellCutter(loaded.tile_specs, settings.save_masks, settings.overlays is not None)
    tiles_slot = CELLS_PER_SLOT * sum(spec.size ** 2 * 4 * 2 for spec in loaded.tile_specs)  # uint16 × 4 planes
    with segmenter, SlotRing(segmenter.in_flight + SCORING_QUEUE, tiles_slot, page_locker(device)) as tiles, \
            process_pool(options.workers) as pool, sink:
        failures |= segmenter.segment(present, Delivery(folder, cutter, pool, sink, tiles), desc="infer")
    runtime.log_failures(failures)
    failures |= {i: f"no image files in {folder.root}" for i in absent}
    if out is not None:
        write_submission(out, _rows(ids, sink.rows, folder.root, sizes), order)
    if table is not None:
        log.info("wrote the table of %d cells: %s", sum(len(p) for p in table.parts),
                 ", ".join(map(str, table.write(settings.cells_out))))
    pictures = None if sink.pictures is None else sink.pictures.finish()
    written = [str(p) for p in (out, settings.cells_out, pictures) if p is not None]
    runtime.log_done(f"{len(sink.rows)} of {len(ids)} images predicted", len(failures), ", ".join(written))
    return failures


def _say_absent(absent: list[str], ids: list[str], folder: Path) -> None:
    """One line, up front, for the sample submission's ids without images (not one line each):
    a refusal when none of them has any (nothing could be predicted), else a warning."""
    if not absent:
        return
    if len(absent) == len(ids):
        raise InputError(f"{folder}: none of the sample submission's {len(ids)} ids has image files here "
                         f"(e.g. {absent[0]}): is -i the test images' folder?")
    log.warning("%d of the sample submission's %d ids have no image files in %s (e.g. %s): their rows stay "
                "empty", len(absent), len(ids), folder, absent[0])


def _provenance(ensemble: Ensemble, segmenter: Segmenter, loaded: LoadedEnsemble) -> dict[str, object]:
    """What made a run's cells and scores, for the per-cell table's record."""
    return {"ensemble": dataclasses.asdict(ensemble), "checkpoints": [str(m.checkpoint) for m in ensemble.members],
            "segmentation": segmenter.provenance.to_dict(), "tile_specs": [s.to_dict() for s in loaded.tile_specs],
            "software": {"hpasc": __version__, **runtime.package_versions()}}


def _rows(ids: list[str], predicted: dict[str, tuple[int, int, str]], images: Path,
          sizes: dict[str, tuple[int, int]]) -> list[tuple[str, int, int, str]]:
    """The submission's rows: predicted images, and failed ones whose size is known with no
    predictions; a failed image of unknown size has no row (a row needs a valid size)."""
    rows = []
    for image_id in ids:
        width, height, text = predicted.get(image_id) or (*image_size(images, image_id, sizes), "")
        if width and height:
            rows.append((image_id, width, height, text))
        else:
            log.error("%s: left out of the submission: no channel file gives its size", image_id)
    return rows
