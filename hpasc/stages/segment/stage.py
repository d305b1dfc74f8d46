"""The segmentator stage: every image of a folder → uint16 cell and nucleus label PNGs, through the
:class:`~hpasc.segmentation.segmenter.Segmenter` that infer.py uses too, and pictures of them."""

from __future__ import annotations

import logging

from hpasc.cells.provenance import record_provenance
from hpasc.core import atomic, runtime
from hpasc.core.image_folder import ImageFolder
from hpasc.core.workers import collect_failures, process_pool
from hpasc.stages.segment.outputs import MaskWriter, picture_job
from hpasc.segmentation.segmenter import Delivery, Segmenter
from hpasc.segmentation.settings import SegmentationSettings

log = logging.getLogger(__name__)


def segment_folder(folder: ImageFolder, outputs: MaskWriter, settings: SegmentationSettings,
                   options: runtime.CommonOptions) -> tuple[str, list[str]]:
    """Segment the images of ``folder`` that are not done yet; returns (backend, failed IDs)."""
    segmenter = Segmenter(settings, options)
    for output in filter(None, (outputs.cells, outputs.nuclei, outputs.overlays)):
        atomic.remove_abandoned(output)
    ids, todo = runtime.plan_work(folder.ids, outputs.done, options, "already segmented")
    backend = segmenter.backend.name
    log.info("%d images, %d to segment with the %s backend", len(ids), len(todo), backend)
    failures = folder.failures(options.shard.select)
    if todo:
        record_provenance(outputs.cells, segmenter.provenance, keeps_others=len(todo) < len(ids))
        with segmenter, process_pool(options.workers) as pool:
            failures |= segmenter.segment(todo, Delivery(folder, outputs, pool))
    failures |= _missing_pictures(ids, folder, outputs, options)
    runtime.log_failures(failures)
    index = outputs.write_index(ids)
    if index is not None:
        log.info("pictures of the segmentation: %s", index)
    runtime.log_done(f"{len(set(todo) - set(failures))} images segmented ({backend} backend), "
                     f"{len(ids) - len(todo)} segmented before", len(failures), outputs.cells)
    return backend, sorted(failures)


def _missing_pictures(ids: list[str], folder: ImageFolder, outputs: MaskWriter,
                      options: runtime.CommonOptions) -> dict[str, str]:
    """Draw the pictures of images segmented before ``--overlays`` was asked for."""
    if not outputs.overlays:
        return {}
    missing = [i for i in ids if outputs.done(i) and not (outputs.overlays / f"{i}.png").is_file()]
    if not missing:
        return {}
    with process_pool(options.workers) as pool:
        return collect_failures({pool.submit(picture_job, folder.source(i), outputs): i for i in missing}, options)


