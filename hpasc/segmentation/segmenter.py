"""The one path from images to cell masks that segmentator.py and infer.py share.

A :class:`Segmenter` is made from :class:`~hpasc.segmentation.settings.SegmentationSettings`: it
decides the :class:`Backend` once (one of :data:`BACKENDS`; ``auto``: HPA's networks when their
weights are at hand), says what will
make the masks (:attr:`Segmenter.provenance`, recorded beside masks, in cell stores and in
checkpoints), and :meth:`Segmenter.segment` runs a folder's images through it, handing each
image's masks to a :class:`~hpasc.segmentation.jobs.MaskConsumer` in a worker process.

The classical backend runs entirely in the workers. With HPA's networks (:class:`NetworkPipeline`):
workers read and prepare each image, the networks run here on batches of same-sized images, and
workers restore their maps and run ``label_cell``. Inputs, maps and results cross between the
processes in shared-memory slots that this process keeps mapped (page-locked on CUDA: the maps
come from the GPU straight into theirs), so the pipes carry only names; bounded queues keep the
workers and the GPU busy together.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hpasc.cells.provenance import Provenance
from hpasc.core import runtime
from hpasc.core.image_folder import ImageFolder
from hpasc.core.shared_arrays import SharedArrays, SlotRing
from hpasc.core.weights_cache import sha256
from hpasc.core.workers import bounded_map, failure_reason
from hpasc.segmentation.jobs import MaskConsumer, PreparedImage, classical_job, finish_job, prepare_job
from hpasc.segmentation.predict import HpaNetworks
from hpasc.segmentation.settings import EXACT, ModelFiles, SegmentationSettings
from hpasc.segmentation.weight_files import CELL_WEIGHTS, NUCLEI_WEIGHTS
from hpasc.segmentation.weights import load_hpa_model

log = logging.getLogger(__name__)

# Slot sizes of the shared-memory rings: a 3072² image's network input (3 × 768² float32) and its
# two networks' maps fit; anything larger travels in a block of its own, which costs the main
# process ~15 ms more per 40 MB.
INPUT_SLOT = 8 << 20
MAPS_SLOT = 16 << 20

OnResult = Callable[[str, object], "Future | None"]
"""Receives each image's result here: returns None when done with it, or a future that completes
when it is (a result handed to another thread); its slot is lent again only then."""


@dataclass(frozen=True)
class Delivery:
    """Where a run's masks go: ``use`` makes each image's result from its masks in a worker of
    ``pool`` (reading the image from ``folder`` when it needs it), ``on_result(image_id, result)``
    receives that result here, and ``results``, when given, lends ``use`` a slot to hand it back in."""

    folder: ImageFolder
    use: MaskConsumer
    pool: ProcessPoolExecutor
    on_result: OnResult = lambda image_id, result: None
    results: SlotRing | None = None


class Backend(Protocol):
    """One way of making masks behind the :class:`Segmenter`: its ``name`` (as ``--backend`` says
    it), whether ``--label-scale`` means anything to it, how many images' results can wait at once
    (``in_flight``), what it records of itself, its start-up (``open``: e.g. loading networks) and
    end, and the segmentation of a folder's images."""

    name: str
    uses_label_scale: bool

    @property
    def in_flight(self) -> int: ...

    def provenance(self) -> Provenance: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def run(self, ids: list[str], delivery: Delivery, bar) -> dict[str, str]: ...


class ClassicalBackend:
    """The classical segmentation (:mod:`hpasc.segmentation.classical`), entirely in the workers."""

    name = "classical"
    uses_label_scale = False

    def __init__(self, settings: SegmentationSettings, options: runtime.CommonOptions) -> None:
        self.window = 2 * options.workers

    @property
    def in_flight(self) -> int:
        return self.window

    def provenance(self) -> Provenance:
        return Provenance(self.name)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, ids: list[str], delivery: Delivery, bar) -> dict[str, str]:
        """Workers segment and hand over ahead of ``on_result``, ``2 × workers`` images at most."""
        failures: dict[str, str] = {}
        results = delivery.results

        def submit(image_id: str) -> Future:
            return delivery.pool.submit(classical_job, delivery.folder.source(image_id), delivery.use,
                                        results and results.lend(image_id))

        for image_id, job in bounded_map(submit, ids, self.window):
            _hand_over(image_id, job, delivery.on_result, failures, results)
            bar.update(1)
        return failures


class HpaBackend:
    """HPA's two networks in this process on batches of images, prepared and finished by the
    workers (:class:`NetworkPipeline`); ``open`` loads the networks and makes the slots."""

    name = "hpa"
    uses_label_scale = True

    def __init__(self, settings: SegmentationSettings, options: runtime.CommonOptions) -> None:
        self.settings, self.options = settings, options
        self.pipeline: NetworkPipeline | None = None

    @property
    def in_flight(self) -> int:
        return NetworkPipeline.in_flight_for(self.settings, self.options)

    def provenance(self) -> Provenance:
        """The weight files' checksums and the post-processing's scale (weights downloaded here if need be)."""
        weights = {name: sha256(path) for name, path in self.settings.models.resolve(self.options.progress).items()}
        return Provenance(self.name, weights, self.settings.label_scale)

    def open(self) -> None:
        self.pipeline = NetworkPipeline(load_networks(self.settings, self.options), self.settings, self.options)

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()

    def run(self, ids: list[str], delivery: Delivery, bar) -> dict[str, str]:
        if self.pipeline is None:
            raise RuntimeError("enter the Segmenter (with segmenter: ...) before segment(): it loads the networks")
        return self.pipeline.run(ids, delivery, bar)


BACKENDS: dict[str, Callable[[SegmentationSettings, runtime.CommonOptions], Backend]] = {
    backend.name: backend for backend in (HpaBackend, ClassicalBackend)}
"""The backends by name; another (e.g. cellpose) is one more class here and its name in
``settings.BACKENDS``, the flag's choices."""


def choose_backend(requested: str, models: ModelFiles) -> str:
    """``auto`` means HPA's networks when their weights are at hand, else the classical backend."""
    if requested != "auto":
        return requested
    if models.available():
        return HpaBackend.name
    log.warning("HPA's segmentation weights are not in %s: using the classical backend "
                "(--backend hpa downloads them, or give --nuclei-model/--cell-model)", models.cache)
    return ClassicalBackend.name


def load_networks(settings: SegmentationSettings, options: runtime.CommonOptions) -> HpaNetworks:
    device = runtime.resolve_device(options.device)
    paths = settings.models.resolve(options.progress)
    return HpaNetworks(load_hpa_model(paths[NUCLEI_WEIGHTS], device),
                       load_hpa_model(paths[CELL_WEIGHTS], device), device, settings.precision)


class Segmenter:
    """Images → cell and nucleus masks, the same way for every stage, through the :class:`Backend`
    the settings choose. Use it as a context manager: entering starts the backend (HPA's: loads the
    networks and makes the shared-memory slots, the stage's start-up)."""

    def __init__(self, settings: SegmentationSettings, options: runtime.CommonOptions) -> None:
        settings.models.check()  # a mistyped weights path is refused before any work
        self.options = options
        self.backend: Backend = BACKENDS[choose_backend(settings.backend, settings.models)](settings, options)
        if not self.backend.uses_label_scale and settings.label_scale != EXACT:
            log.warning("--label-scale %g has no effect with the %s backend", settings.label_scale, self.backend.name)

    @functools.cached_property
    def provenance(self) -> Provenance:
        """What makes the masks (recorded beside masks, in cell stores and in checkpoints)."""
        return self.backend.provenance()

    def __enter__(self) -> Segmenter:
        self.backend.open()
        return self

    def __exit__(self, *exc) -> None:
        self.backend.close()

    @property
    def in_flight(self) -> int:
        """How many images' results can be waiting at once (a result ring's size)."""
        return self.backend.in_flight

    def segment(self, ids: list[str], delivery: Delivery, desc: str | None = None) -> dict[str, str]:
        """Segment the images ``ids`` of the delivery's folder and hand each one's masks to its
        ``use``; returns {failed image: reason}."""
        bar = self.options.bar(total=len(ids), unit="image", desc=desc)
        try:
            return self.backend.run(ids, delivery, bar)
        finally:
            bar.close()


def _hand_over(image_id: str, job: Future, on_result: OnResult, failures: dict[str, str],
               results: SlotRing | None) -> None:
    """Give ``on_result`` the job's result (or note its failure), and its slot back once it is done."""
    reason = failure_reason(job)
    used = None
    if reason is not None:
        failures[image_id] = reason
    else:
        used = on_result(image_id, job.result())
    if results is None:
        return
    if used is None:
        results.settle(image_id)
    else:
        used.add_done_callback(lambda _: results.settle(image_id))


class NetworkPipeline:
    """Prepare in workers → network batches here → ``finish_job`` (labels, then the stage's
    :class:`MaskConsumer`) in workers, with bounded queues. Results reach ``on_result`` in the order
    their network batches ran (same-sized images are batched together, so not always the order
    of the ids)."""

    def __init__(self, networks: HpaNetworks, settings: SegmentationSettings, options: runtime.CommonOptions):
        self.networks, self.settings = networks, settings
        self.window = self.window_for(settings, options)
        self.in_flight = self.in_flight_for(settings, options)
        self.inputs = SlotRing(self.in_flight, INPUT_SLOT, networks.page_locker())
        self.maps = SlotRing(self.in_flight, MAPS_SLOT, networks.page_locker())

    @staticmethod
    def window_for(settings: SegmentationSettings, options: runtime.CommonOptions) -> int:
        """Jobs in the workers' hands at once: 2 × workers and a batch."""
        return 2 * options.workers + settings.batch_size

    @classmethod
    def in_flight_for(cls, settings: SegmentationSettings, options: runtime.CommonOptions) -> int:
        """An image holds a slot from its job's submission to its hand-over: the window's jobs plus
        a batch waiting for the networks."""
        return cls.window_for(settings, options) + settings.batch_size

    def close(self) -> None:
        self.inputs.close()
        self.maps.close()

    def run(self, ids: list[str], delivery: Delivery, bar) -> dict[str, str]:
        finish = functools.partial(finish_job, delivery.folder, self.settings.label_scale, delivery.use)
        run = _PipelineRun(self, delivery.folder, delivery.pool, finish, delivery.on_result, delivery.results, bar)
        return run.run(ids)


class _PipelineRun:
    """One folder through a :class:`NetworkPipeline`."""

    def __init__(self, pipeline: NetworkPipeline, folder: ImageFolder, pool: ProcessPoolExecutor,
                 finish: Callable[..., object], on_result: OnResult, results: SlotRing | None, bar) -> None:
        self.pipeline, self.folder, self.pool, self.finish = pipeline, folder, pool, finish
        self.on_result, self.results, self.bar = on_result, results, bar
        self.failures: dict[str, str] = {}
        self.finishing: deque[tuple[str, Future]] = deque()

    def run(self, ids: list[str]) -> dict[str, str]:
        groups: dict[tuple[int, ...], list[tuple[str, PreparedImage]]] = {}
        inputs = self.pipeline.inputs

        def submit(image_id: str) -> Future:
            return self.pool.submit(prepare_job, self.folder.source(image_id), inputs.lend(image_id))

        for image_id, job in bounded_map(submit, ids, self.pipeline.window):
            reason = failure_reason(job)
            if reason is not None:
                inputs.settle(image_id)
                self._fail(image_id, reason)
                continue
            prepared = job.result()
            group = groups.setdefault(prepared.shape, [])
            group.append((image_id, prepared))
            if len(group) == self.pipeline.settings.batch_size:
                self._network(groups.pop(prepared.shape))
        for group in groups.values():
            self._network(group)
        while self.finishing:
            self._collect_oldest()
        return self.failures

    def _network(self, group: list[tuple[str, PreparedImage]]) -> None:
        """Run the networks on a batch, their maps straight into the images' slots, and queue the
        images' label_cell and use in workers."""
        shape = group[0][1].planes.shapes[0]
        maps = [SharedArrays.empty([(shape, np.float32)] * 2, self.pipeline.maps.lend(image_id)) for image_id, _ in group]
        self.pipeline.networks.run([prepared.planes.arrays()[0] for _, prepared in group],
                                   [image_maps.arrays() for image_maps in maps])
        for (image_id, prepared), image_maps in zip(group, maps):
            prepared.planes.release()
            self.pipeline.inputs.settle(image_id)
            slot = self.results and self.results.lend(image_id)
            self.finishing.append((image_id, self.pool.submit(self.finish, image_id, image_maps.filled(),
                                                              prepared.geometry, slot)))
        while len(self.finishing) > self.pipeline.window or (self.finishing and self.finishing[0][1].done()):
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        image_id, job = self.finishing.popleft()
        _hand_over(image_id, job, self.on_result, self.failures, self.results)
        self.pipeline.maps.settle(image_id)
        self.bar.update(1)

    def _fail(self, image_id: str, reason: str) -> None:
        self.failures[image_id] = reason
        self.bar.update(1)
