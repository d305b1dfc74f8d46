"""bench/host.py's runs: segmentator, infer.py and train_me's epoch loop with their networks replaced
by GPU stand-ins.

Imported by bench/host.py's main only (it imports torch, which the pools' workers must not).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from host_meter import (B0_TILES_PER_S, B0_TRAIN_IMAGES_PER_S, TRAIN_BATCH, UNET_IMAGES_PER_S, Figures, Meter,
                  StandInGpu, _children_cpu, measure)
from hpasc.cells.tile_spec import TileSpec
from hpasc.core import runtime, shared_arrays
from hpasc.core.image_folder import scan_images
from hpasc.core.images import read_label_image
from hpasc.stages.infer import ensemble as ensemble_module
from hpasc.stages.infer import stage as infer_stage
from hpasc.segmentation import segmenter
from hpasc.stages.segment import stage as seg_stage
from hpasc.segmentation.settings import ModelFiles, SegmentationSettings
from hpasc.stages.segment.outputs import MaskWriter
from hpasc.segmentation.predict import HpaNetworks
from hpasc.models.spec import ModelSpec
from hpasc.stages.train.augment import AugmentSettings
from hpasc.stages.train.data import CellSet, EpochBatches, TileReader
from hpasc.stages.train.distributed import Process
from hpasc.stages.train.engine import Engine
from measure import _key, ensemble_file, folder_maps  # bench/gpu/measure.py
from train import real_cells  # bench/train.py


class StandInNetworks(HpaNetworks):
    """HPA's networks as the host sees them: the input copied out (a host-to-device copy), the GPU
    time waited for, the realistic maps copied back (device-to-host)."""

    def __init__(self, meter: Meter, gpu: StandInGpu, maps: dict[bytes, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__(torch.nn.Identity(), torch.nn.Identity(), "cpu")
        self.meter, self.gpu, self.maps = meter, gpu, maps

    def run(self, planes: list[np.ndarray], maps: list[list[np.ndarray]]) -> None:
        for image in planes:
            if not _page_locked(torch.from_numpy(image)):  # from pageable memory the driver copies on the host
                np.array(image, copy=True)
        self.gpu.run(len(planes) / UNET_IMAGES_PER_S)
        for image, image_maps in zip(planes, maps):
            nuclei, cells = self.maps[_key(image)]
            self.meter.shared += image.nbytes + nuclei.nbytes + cells.nbytes
            for target, source in zip(image_maps, (nuclei, cells)):
                self._copy_back(target, source)

    def _copy_back(self, target: np.ndarray, source: np.ndarray) -> None:
        """The device-to-host copy: into page-locked memory the GPU's copy engine writes it (the
        host's CPU time for it is left out), into pageable memory the driver copies on the host."""
        start = time.thread_time()
        target[...] = source
        if _page_locked(torch.from_numpy(target)):
            self.meter.offloaded += time.thread_time() - start


def _stand_in_loader(meter: Meter, gpu: StandInGpu, maps: dict):
    def load(*_args, **_kwargs) -> StandInNetworks:
        return StandInNetworks(meter, gpu, maps)
    return load


def _page_locked(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` lies in a slot of a ring, which is page-locked on CUDA."""
    start = tensor.data_ptr()
    for block in {id(ring): ring for ring in shared_arrays._RINGS.values()}.values():
        for mapped in block.blocks.values():
            base = np.frombuffer(mapped.buf, np.uint8).ctypes.data
            if base <= start < base + mapped.size:
                return True
    return False


def _stand_in_score(meter: Meter, gpu: StandInGpu):
    rng = np.random.default_rng(0)

    def score(self, tiles, embeddings) -> np.ndarray:
        per_recipe = [tiles] if isinstance(tiles, torch.Tensor) else list(tiles)
        for batch in per_recipe:
            meter.shared += batch.nbytes
            if not _page_locked(batch):  # from pageable memory, the driver copies on the host
                np.array(batch.numpy(), copy=True)
        count = len(per_recipe[0])
        gpu.run(len(self.models) * count / B0_TILES_PER_S)
        meter.done()
        return rng.random((count, 19), dtype=np.float32)
    return score


def _weights(work: Path) -> ModelFiles:
    path = work / "stand_in_weights.pth"
    path.write_bytes(b"stand-in: never loaded")
    return ModelFiles(nuclei=path, cells=path)


def run_segment(work: Path, images: Path, truth: Path, args) -> Figures:
    meter, maps = Meter(), folder_maps(images, truth)
    options = runtime.CommonOptions(workers=args.workers, device="cpu", overwrite=True, progress=False)
    options = _metered(options, meter)
    segmenter.load_networks = _stand_in_loader(meter, StandInGpu(meter), maps)
    _metered_pool(meter, seg_stage)
    settings = SegmentationSettings("hpa", _weights(work), args.label_scale, batch_size=16)

    def run() -> None:
        seg_stage.segment_folder(scan_images(images), MaskWriter(work / "masks"), settings, options)
    return measure("segmentator (hpa, batch 16)", run, meter, args.workers, "hpasc.segmentation.jobs",
                   args.images, 1 / UNET_IMAGES_PER_S)


def run_infer(work: Path, images: Path, truth: Path, args) -> Figures:
    meter, maps = Meter(), folder_maps(images, truth)
    gpu = StandInGpu(meter)
    options = _metered(runtime.CommonOptions(workers=args.workers, device="cpu", progress=False), meter)
    segmenter.load_networks = _stand_in_loader(meter, gpu, maps)
    _metered_pool(meter, infer_stage)
    ensemble_module.LoadedEnsemble._score = _stand_in_score(meter, gpu)
    ensemble = ensemble_file(work, args.members)
    settings = infer_stage.InferSettings(SegmentationSettings("hpa", _weights(work), args.label_scale, batch_size=8))
    cells = np.mean([read_label_image(p).max() for p in sorted(truth.glob("*.png"))])

    def run() -> None:
        failed = infer_stage.infer_folder(scan_images(images), ensemble, work / "submission.csv", None, settings,
                                          options)
        assert not failed, failed
        meter.end()  # the last image scored, not only handed to the scoring thread
    gpu_s = cells * args.members / B0_TILES_PER_S + 1 / UNET_IMAGES_PER_S
    return measure(f"infer ({args.members} x B0, hpa seg)", run, meter, args.workers, "hpasc.stages.infer.jobs",
                   args.images, gpu_s)


def _metered_pool(meter: Meter, module) -> None:
    """The stage's process pool, noting the meter's first mark once it has started."""
    real = module.process_pool

    @contextlib.contextmanager
    def pool(workers: int):
        with real(workers) as started:
            meter.mark()
            yield started
    module.process_pool = pool


def _metered(options: runtime.CommonOptions, meter: Meter) -> runtime.CommonOptions:
    """The options with their progress bar replaced by the meter's."""
    class Metered(type(options)):
        def bar(self, iterable=None, **kwargs):
            return meter.bar(iterable, **kwargs)
    return Metered(**{name: getattr(options, name) for name in options.__dataclass_fields__})




def stand_in_engine(meter: Meter, gpu: StandInGpu) -> Engine:
    """train_me's Engine with the device work replaced: a step queues the measured B0 training
    time on the stand-in GPU after the host side of its input copy (from pageable memory the driver
    copies the batch on the host first; from a page-locked slot the GPU reads it itself). The
    targets stay on the device, so nothing in a step waits for the GPU."""
    class StandIn(Engine):
        def train_step(self, tiles: torch.Tensor, batch_targets: torch.Tensor, generator) -> torch.Tensor:
            meter.shared += tiles.nbytes
            if not _page_locked(tiles):
                np.array(tiles.numpy(), copy=True)
            gpu.launch(len(tiles) / B0_TRAIN_IMAGES_PER_S)
            return torch.zeros(())

    model = torch.nn.Linear(1, 18)
    return StandIn(model, ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(512)),
                   torch.optim.Adam(model.parameters()), None, "bce", AugmentSettings(), Process())


def run_train(work: Path, args) -> Figures:
    """One epoch of ``--batches`` batches of 64 real 512 px tiles (random cells of the real samples'
    store, with repeats) through train_me's tile reader (``--workers`` processes, as on a GPU) and
    Engine loop, the model a stand-in."""
    cells = real_cells(work / "train" / "dataset")
    rows = np.random.default_rng(0).integers(0, len(cells), args.batches * TRAIN_BATCH)
    targets = torch.rand(len(cells), 18)
    meter = Meter()
    gpu = StandInGpu(meter)
    engine = stand_in_engine(meter, gpu)
    options = _metered(runtime.CommonOptions(workers=args.workers, device="cpu", progress=False), meter)
    batches = EpochBatches(TRAIN_BATCH, drop_last=True)
    batches.set_indices(rows)
    startup = reader_startup_cpu(cells, args.workers)
    before = _children_cpu()
    with TileReader(cells, 512, TRAIN_BATCH, args.workers, torch.device("cpu")) as reader:
        engine.train_epoch(reader.batches(batches), targets, torch.Generator(), options, "epoch")
        gpu.sync()
        meter.mark()
    worker_s = (_children_cpu() - before - startup) / len(rows)
    main_ms, pipe_mb, wait_ms = meter.per_image()
    return Figures(f"train (B0 step, batch {TRAIN_BATCH})", args.batches, main_ms, pipe_mb,
                   meter.shared / args.batches / 1e6, wait_ms, worker_s * TRAIN_BATCH,
                   TRAIN_BATCH / B0_TRAIN_IMAGES_PER_S, TRAIN_BATCH)


def reader_startup_cpu(cells: CellSet, workers: int) -> float:
    """The reader's workers' CPU seconds to start and stop with nothing to read."""
    before = _children_cpu()
    with TileReader(cells, 512, TRAIN_BATCH, workers, torch.device("cpu")) as reader:
        for started in [reader._pool.submit(int) for _ in range(workers)]:  # a worker spawned per job
            started.result()
    return _children_cpu() - before
