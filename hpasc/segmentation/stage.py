"""The segmentator stage: every image of a folder → uint16 cell and nucleus label PNGs.

CPU work (reading, HPA's scaling, restoring the network output, ``label_cell``, writing) runs in a
spawn process pool (its jobs: :mod:`hpasc.segmentation.jobs`); the networks run in the main
process on batches of same-sized images. Bounded queues keep both sides busy: while the GPU works
on one batch, workers prepare the next images and post-process the previous batch.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hpasc import atomic, runtime
from hpasc.image_folder import ImageFolder
from hpasc.models.precision import Precision
from hpasc.segmentation.jobs import Outputs, classical_job, finish_job, picture_job, prepare_job
from hpasc.segmentation.predict import HpaNetworks
from hpasc.segmentation.provenance import Provenance, record_provenance
from hpasc.segmentation.scaling import NetworkInput
from hpasc.segmentation.weights import CELL_WEIGHTS, NUCLEI_WEIGHTS, default_cache_dir, load_hpa_model, resolve_weights
from hpasc.weights_cache import sha256
from hpasc.workers import bounded_map, collect_failures, failure_reason, process_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFiles:
    """HPA's weight files: explicit paths, else the cache (downloaded there when possible, from
    ``url`` if given, e.g. a mirror, else Zenodo)."""

    nuclei: Path | None = None
    cells: Path | None = None
    cache_dir: Path | None = None
    url: str | None = None

    @property
    def cache(self) -> Path:
        return self.cache_dir or default_cache_dir()

    def choices(self) -> dict[str, Path | None]:
        """Weights file name → the explicit path given for it (None: use the cache)."""
        return {NUCLEI_WEIGHTS: self.nuclei, CELL_WEIGHTS: self.cells}

    def check(self) -> None:
        """Explicit paths are user input: refuse a missing one before any work starts."""
        for name, path in self.choices().items():
            if path is not None:
                resolve_weights(name, path, self.cache, download=False)

    def available(self) -> bool:
        return all((path or self.cache / name).is_file() for name, path in self.choices().items())

    def resolve(self, progress: bool) -> dict[str, Path]:
        """The two files' paths, downloading missing ones into the cache (InputError if that fails)."""
        return {name: resolve_weights(name, path, self.cache, download=True, base_url=self.url,
                                      progress=progress)
                for name, path in self.choices().items()}


def check_label_scale(backend: str, label_scale: float) -> None:
    """Say so when ``--label-scale`` cannot apply (it shapes HPA's post-processing only)."""
    if backend != "hpa" and label_scale != 1:
        log.warning("--label-scale %g has no effect with the %s backend", label_scale, backend)


def model_files_from_args(args: argparse.Namespace) -> ModelFiles:
    return ModelFiles(nuclei=args.nuclei_model, cells=args.cell_model, cache_dir=args.weights_dir,
                      url=args.weights_url)


def choose_backend(requested: str, models: ModelFiles) -> str:
    """``auto`` means HPA's networks when their weights are at hand, else the classical backend."""
    if requested != "auto":
        return requested
    if models.available():
        return "hpa"
    log.warning("HPA's segmentation weights are not in %s: using the classical backend "
                "(--backend hpa downloads them, or give --nuclei-model/--cell-model)", models.cache)
    return "classical"


def segment_folder(folder: ImageFolder, outputs: Outputs, backend: str, models: ModelFiles,
                   batch_size: int, options: runtime.CommonOptions, precision: Precision = Precision(),
                   label_scale: float = 1.0) -> tuple[str, list[str]]:
    """Segment the images of ``folder`` that are not done yet; returns (backend, failed IDs)."""
    models.check()
    for output in filter(None, (outputs.cells, outputs.nuclei, outputs.overlays)):
        atomic.remove_abandoned(output)
    ids, todo = runtime.plan_work(folder.ids, outputs.done, options, "already segmented")
    backend = choose_backend(backend, models)
    check_label_scale(backend, label_scale)
    log.info("%d images, %d to segment with the %s backend", len(ids), len(todo), backend)
    failures = folder.failures(options.shard.select)
    if todo:
        record_provenance(outputs.cells, masks_provenance(backend, models, options.progress, label_scale),
                          keeps_others=len(todo) < len(ids))
        networks = load_networks(models, options, precision) if backend == "hpa" else None
        with process_pool(options.workers) as pool:
            if networks is None:
                failures |= _run_classical(todo, folder, outputs, pool, options)
            else:
                pipeline = NetworkPipeline(folder, networks, batch_size, pool, options,
                                           functools.partial(finish_job, outputs, folder, label_scale))
                failures |= pipeline.run(todo)
    failures |= _missing_pictures(ids, folder, outputs, options)
    runtime.log_failures(failures)
    index = outputs.write_index(ids)
    if index is not None:
        log.info("pictures of the segmentation: %s", index)
    runtime.log_done(f"{len(set(todo) - set(failures))} images segmented ({backend} backend), "
                     f"{len(ids) - len(todo)} segmented before", len(failures), outputs.cells)
    return backend, sorted(failures)


def _missing_pictures(ids: list[str], folder: ImageFolder, outputs: Outputs,
                      options: runtime.CommonOptions) -> dict[str, str]:
    """Draw the pictures of images segmented before ``--overlays`` was asked for."""
    if not outputs.overlays:
        return {}
    missing = [i for i in ids if outputs.done(i) and not (outputs.overlays / f"{i}.png").is_file()]
    if not missing:
        return {}
    with process_pool(options.workers) as pool:
        return collect_failures({pool.submit(picture_job, folder.source(i), outputs): i for i in missing}, options)


def masks_provenance(backend: str, models: ModelFiles, progress: bool, label_scale: float = 1.0) -> Provenance:
    """What makes the masks: the backend and, for HPA's networks, their weight files' checksums and
    the scale of their post-processing."""
    if backend != "hpa":
        return Provenance(backend)
    return Provenance("hpa", {name: sha256(path) for name, path in models.resolve(progress).items()}, label_scale)


def load_networks(models: ModelFiles, options: runtime.CommonOptions, precision: Precision) -> HpaNetworks:
    device = runtime.resolve_device(options.device)
    paths = models.resolve(options.progress)
    return HpaNetworks(load_hpa_model(paths[NUCLEI_WEIGHTS], device),
                       load_hpa_model(paths[CELL_WEIGHTS], device), device, precision)


def _run_classical(todo: list[str], folder: ImageFolder, outputs: Outputs,
                   pool: ProcessPoolExecutor, options: runtime.CommonOptions) -> dict[str, str]:
    futures = {pool.submit(classical_job, folder.source(i), outputs): i for i in todo}
    return collect_failures(futures, options)


class NetworkPipeline:
    """Prepare in workers → network batches here → ``finish`` in workers, with bounded queues.

    ``finish(image_id, nuclei, cells, geometry)`` (picklable: a module-level function or a
    partial of one) turns an image's raw network outputs into its result in a worker;
    ``on_result(image_id, result)`` receives the results here, in the order their network batches
    ran (same-sized images are batched together, so not always the order of ``todo``).
    """

    def __init__(self, folder: ImageFolder, networks, batch_size: int, pool: ProcessPoolExecutor,
                 options: runtime.CommonOptions, finish: Callable[..., object],
                 on_result: Callable[[str, object], None] = lambda image_id, result: None):
        self.folder, self.networks, self.pool = folder, networks, pool
        self.batch_size, self.finish, self.on_result = batch_size, finish, on_result
        self.window = 2 * options.workers + batch_size
        self.bar = options.bar(total=0, unit="image")
        self.failures: dict[str, str] = {}
        self.finishing: deque[tuple[str, Future]] = deque()

    def run(self, todo: list[str]) -> dict[str, str]:
        self.bar.reset(total=len(todo))
        groups: dict[tuple[int, ...], list[tuple[str, NetworkInput]]] = {}

        def submit(image_id: str) -> Future:
            return self.pool.submit(prepare_job, self.folder.source(image_id))

        for image_id, job in bounded_map(submit, todo, self.window):
            reason = failure_reason(job)
            if reason is not None:
                self._fail(image_id, reason)
                continue
            prepared = job.result()
            group = groups.setdefault(prepared.nuclei.shape, [])
            group.append((image_id, prepared))
            if len(group) == self.batch_size:
                self._network(groups.pop(prepared.nuclei.shape))
        for group in groups.values():
            self._network(group)
        while self.finishing:
            self._collect_oldest()
        self.bar.close()
        return self.failures

    def _network(self, group: list[tuple[str, NetworkInput]]) -> None:
        nuclei, cells = self.networks([prepared for _, prepared in group])
        for index, (image_id, prepared) in enumerate(group):
            job = self.pool.submit(self.finish, image_id, nuclei[index], cells[index],
                                   prepared.geometry)
            self.finishing.append((image_id, job))
        while len(self.finishing) > self.window or (self.finishing and self.finishing[0][1].done()):
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        image_id, job = self.finishing.popleft()
        reason = failure_reason(job)
        if reason is not None:
            self._fail(image_id, reason)
        else:
            self.on_result(image_id, job.result())
            self.bar.update(1)

    def _fail(self, image_id: str, reason: str) -> None:
        self.failures[image_id] = reason
        self.bar.update(1)
