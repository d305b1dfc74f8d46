"""The CUDA benchmarks of bench/gpu/run.sh, on synthetic 2048² images generated on the device.

Sections (each appends its rows to --results, a JSON-lines file; ``--table`` prints them all):

- ``networks``: HPA's nuclei + cell DPN-UNets (random weights: their speed does not depend on
  them) on 512² inputs (a 2048² image at HPA's scale 0.25), images/s per batch size, per autocast
  dtype, channels-last on and off; host-to-device input and device-to-host softmax included.
- ``segmentator``: the segmentator stage (``segment_folder``) over --images images (559, Kaggle's
  test set) with 16 workers, at each --label-scales; the networks run for real, then their output
  is swapped for realistic maps made from each image's known masks (``tests/stand_in_maps.py``),
  so ``label_cell`` does a real image's work. The whole run's images/s (start-up included), the
  time to the first image and the steady state after it; GPU busy % sampled through NVML.
- ``training``: EfficientNet-B0 at 512 px, training images/s of the model step alone (per dtype,
  channels-last; with --compile also compiled, its compile time apart), of the Engine's eager step
  (uint16 tiles in, augmentation on the GPU), of the loader alone with 16 workers over a cell store
  cut from the synthetic images, and of a whole epoch from that store (TileReader + Engine, as
  train_me runs it: compiled, the default, and eager) with the GPU's busy share and the first 8
  batches' seconds (the compile time) apart.
- ``inference``: ``infer_folder`` with HPA's segmentation (as in ``segmentator``) and 7 B0
  checkpoints at 512 px, seconds per 2048² image with 16 workers (--images) and with 2 (a twelfth
  of them), at each --label-scales, with the same start-up / steady-state split.

Usage: python bench/gpu/measure.py SECTION... --work DIR --results FILE | --table FILE
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from hpasc.core import runtime  # noqa: E402
from hpasc.core.image_folder import scan_images  # noqa: E402
from hpasc.core.images import read_label_image  # noqa: E402
from hpasc.stages.infer import stage as infer_stage  # noqa: E402
from hpasc.models.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from hpasc.models.precision import PRECISIONS, Precision  # noqa: E402
from hpasc.models.registry import create_model  # noqa: E402
from hpasc.cells.tile_spec import TileSpec  # noqa: E402
from hpasc.models.spec import ModelSpec  # noqa: E402
from hpasc.segmentation import segmenter  # noqa: E402
from hpasc.stages.segment import stage as seg_stage  # noqa: E402
from hpasc.segmentation.settings import ModelFiles, SegmentationSettings  # noqa: E402
from hpasc.stages.segment.outputs import MaskWriter  # noqa: E402
from hpasc.segmentation.network import DPNUNet  # noqa: E402
from hpasc.segmentation.predict import HpaNetworks  # noqa: E402
from hpasc.segmentation.scaling import prepare  # noqa: E402
from tests.stand_in_maps import network_sized_maps  # noqa: E402
from hpasc.stages.train.augment import AugmentSettings  # noqa: E402
from hpasc.stages.train.distributed import Process  # noqa: E402
from hpasc.stages.train.engine import Engine, adam, place_model  # noqa: E402
from hpasc.stages.train.losses import create_loss  # noqa: E402

BASE_IMAGES = 8  # distinct synthetic images; the rest of a folder are copies under new IDs
SECTIONS = ("networks", "segmentator", "training", "inference")
# CUDA is what this measures; the CPU only lets a dry run with tiny sizes check the script.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class Results:
    """Rows appended as they are measured, so a run cut short keeps what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, section: str, what: str, value: float, unit: str, note: str = "") -> None:
        row = {"section": section, "what": what, "value": round(value, 3), "unit": unit, "note": note}
        print(f"{section:12s} {what:58s} {value:10.2f} {unit:10s} {note}", flush=True)
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")


def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print("\n| section | what | value | unit | note |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['section']} | {row['what']} | {row['value']:g} | {row['unit']} | {row['note']} |")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Seconds per call of ``step``, after ``warmup`` calls (cuDNN autotuning, allocation)."""
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return (time.perf_counter() - start) / repeats


class GpuBusy:
    """The share of NVML samples (every 20 ms) in which the GPU was running a kernel."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as exc:  # no NVML: the figure is reported as nan
            print(f"NVML unavailable: {exc}")
            self.nvml = None
        self.samples: list[int] = []
        self.running = False

    @contextmanager
    def sampling(self) -> Iterator[None]:
        self.samples, self.running = [], self.nvml is not None
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.running = False
            thread.join()

    def _sample(self) -> None:
        while self.running:
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            time.sleep(0.02)

    @property
    def percent(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


# ---------------------------------------------------------------- data made on the device

def synthetic_images(work: Path, count: int) -> Path:
    """``work/images{count}``: BASE_IMAGES synthetic 2048² images drawn in parallel, linked
    ``count`` times in all under new IDs, and their cell masks under the same IDs in
    ``work/masks{count}``."""
    base = work / "base"
    if not base.is_dir():
        jobs = [subprocess.Popen([sys.executable, "-m", "hpasc.commands.synthetic", "-o", str(base / f"s{seed}"),
                                  "-n", "1",
                                  "--size", "2048", "--seed", str(seed), "--no-progress"], cwd=REPO)
                for seed in range(BASE_IMAGES)]
        assert all(job.wait() == 0 for job in jobs)
    folder = work / f"images{count}"
    if not folder.is_dir():
        masks = work / f"masks{count}"
        folder.mkdir()
        masks.mkdir()
        sources = sorted(base.glob("s*/*_red.png"))
        for index in range(count):
            source = sources[index % len(sources)]
            stem = source.name.removesuffix("_red.png")
            for channel in ("red", "green", "blue", "yellow"):
                os.link(source.with_name(f"{stem}_{channel}.png"), folder / f"{stem}-{index}_{channel}.png")
            os.link(source.parent / "truth" / f"{stem}.png", masks / f"{stem}-{index}.png")
    return folder


def _key(planes: np.ndarray) -> bytes:
    """An image's network input (3×h×w: red, yellow, blue), recognised by a sample of its blue plane."""
    return hashlib.sha1(np.ascontiguousarray(planes[2, ::17, ::13]).tobytes()).digest()


def folder_maps(images: Path, truth: Path) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
    """Network-sized softmax stand-ins of each image of ``images`` (its known masks in ``truth``
    and ``truth/nuclei``), keyed by its prepared input."""
    folder, maps = scan_images(images), {}
    for image_id in folder.ids:
        prepared = prepare(folder.read(image_id))
        cells = read_label_image(truth / f"{image_id}.png")
        nuclei = read_label_image(truth / "nuclei" / f"{image_id}.png")
        maps[_key(prepared.cells)] = network_sized_maps(cells, nuclei, prepared.cells.shape[1:])
    return maps


def realistic_maps(work: Path) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
    """:func:`folder_maps` of every base image."""
    maps = {}
    for base in sorted((work / "base").glob("s*")):
        maps |= folder_maps(base, base / "truth")
    return maps


class RealisticNetworks(HpaNetworks):
    """HPA's networks run for real; their output is then replaced by realistic maps."""

    maps: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def run(self, planes: list[np.ndarray], maps: list[list[np.ndarray]]) -> None:
        super().run(planes, maps)  # the real work, its maps copied into place
        for image, image_maps in zip(planes, maps):
            for target, source in zip(image_maps, self.maps[_key(image)]):
                target[...] = source


def realistic_loader(work: Path, load_real: Callable[..., HpaNetworks] = segmenter.load_networks
                     ) -> Callable[..., HpaNetworks]:
    """A stand-in for ``load_networks`` (bound before any patching) giving RealisticNetworks."""
    RealisticNetworks.maps = realistic_maps(work)

    def load(settings: SegmentationSettings, options: runtime.CommonOptions) -> HpaNetworks:
        real = load_real(settings, options)
        return RealisticNetworks(real.nuclei_model, real.cell_model, DEVICE, settings.precision)
    return load


def random_weights(work: Path) -> Path:
    path = work / "random_dpn_unet.pth"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save(DPNUNet().state_dict(), path)
    return path


# ---------------------------------------------------------------- sections

def networks(results: Results, work: Path, batch_sizes: list[int]) -> None:
    folder = scan_images(synthetic_images(work, BASE_IMAGES))
    prepared = prepare(folder.read(folder.ids[0]))
    torch.manual_seed(0)
    nuclei, cells = DPNUNet(), DPNUNet()
    reference = HpaNetworks(nuclei, cells, DEVICE, Precision("float32", channels_last=False))([prepared])
    for dtype in PRECISIONS:
        for channels_last in (True, False):
            nets = HpaNetworks(nuclei, cells, DEVICE, Precision(dtype, channels_last))
            difference = max(np.abs(a - b).max() for a, b in zip(nets([prepared]), reference))
            for batch_size in batch_sizes:
                batch = [prepared] * batch_size
                seconds = timed(lambda: nets(batch), repeats=max(2, 32 // batch_size))
                results.add("networks", f"{dtype}, channels-last {'on' if channels_last else 'off'}, "
                            f"batch {batch_size}", batch_size / seconds, "images/s",
                            f"max |p - p(float32)| {difference:.4f}")


class Clock:
    """Stands in for a stage's progress bar: the time each image was finished, to tell the start-up
    (until the first image) from the steady state (images/s after it)."""

    def __init__(self) -> None:
        self.start, self.marks = time.perf_counter(), []

    def options(self, **fields) -> runtime.CommonOptions:
        clock = self

        class Timed(runtime.CommonOptions):
            def bar(self, iterable=None, **_):
                return clock
        return Timed(progress=False, **fields)

    def update(self, n: int = 1) -> None:
        self.marks.extend([time.perf_counter()] * n)

    def close(self) -> None:
        pass

    def note(self, busy: GpuBusy) -> str:
        first, last = self.marks[0] - self.start, self.marks[-1] - self.marks[0]
        steady = (len(self.marks) - 1) / last if last > 0 else float("nan")
        return f"first image after {first:.1f} s, then {steady:.1f} images/s; GPU busy {busy.percent:.0f} %"


def segmentator(results: Results, work: Path, workers: int, batch_size: int, dtype: str, count: int,
                label_scales: list[float]) -> None:
    images = synthetic_images(work, count)
    weights = random_weights(work)
    models = ModelFiles(nuclei=weights, cells=weights)
    original, segmenter.load_networks = segmenter.load_networks, realistic_loader(work)
    busy = GpuBusy()
    try:
        for scale in label_scales:
            out = work / f"seg-{scale:g}"
            clock = Clock()
            options = clock.options(workers=workers, device=DEVICE, overwrite=True)
            settings = SegmentationSettings("hpa", models, scale, batch_size, Precision(dtype))
            with busy.sampling():
                _, failed = seg_stage.segment_folder(scan_images(images), MaskWriter(out), settings, options)
                seconds = time.perf_counter() - clock.start
            assert not failed, failed
            cells = np.mean([read_label_image(p).max() for p in sorted(out.glob("*.png"))[:8]])
            results.add("segmentator", f"{workers} workers, batch {batch_size}, {dtype}, label scale {scale:g}",
                        count / seconds, "images/s",
                        f"{count} images incl. loading; {clock.note(busy)}; {cells:.0f} cells/image")
    finally:
        segmenter.load_networks = original


def model_step_rate(batch: int, precision: Precision, compiled: bool, steps: int = 10) -> float:
    device = torch.device(DEVICE)
    model = create_model("efficientnet-b0", 18).to(device, memory_format=precision.memory_format(device))
    step_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.needs_scaler(device))
    loss_fn = create_loss("bce")
    x = torch.rand(batch, 4, 512, 512, device=device).contiguous(memory_format=precision.memory_format(device))
    y = torch.rand(batch, 18, device=device)

    def step() -> None:
        with precision.autocast(device):
            loss = loss_fn(step_model(x), y).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return batch / timed(step, steps, warmup=3 if compiled else 2)


def engine_rate(batch: int, precision: Precision, steps: int = 10) -> float:
    """Engine.train_epoch on uint16 tiles already in memory: prepare, augment -p, step."""
    process = Process(device=torch.device(DEVICE))
    model = place_model(create_model("efficientnet-b0", 18), process, precision)
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(512))
    engine = Engine(model, spec, adam(model, 3e-4, process.device), None, "bce",
                    AugmentSettings.from_flags(False, True), process, precision)
    tiles = torch.randint(0, 65535, (batch, 4, 512, 512), dtype=torch.int32).to(torch.uint16)
    tiles = tiles.pin_memory() if DEVICE == "cuda" else tiles  # as the loader pins them
    loader = [(tiles, torch.arange(batch))] * steps
    targets = torch.rand(batch, 18)
    options = runtime.CommonOptions(progress=False)
    generator = torch.Generator().manual_seed(0)
    return batch / timed(lambda: engine.train_epoch(loader, targets, generator, options, ""), 1) * steps


def store_cells(work: Path, workers: int, count: int):
    """The CellSet of ``work/dataset``: a store cut at 512 px from the synthetic images (once)."""
    from hpasc.cellstore import open_cells
    from hpasc.stages.train.data import CellSet

    dataset = work / "dataset"
    if not (dataset / "cells.csv").is_file():
        images = synthetic_images(work, count)
        subprocess.run([sys.executable, "image_cutter.py", "-i", str(images), "-m", str(work / f"masks{count}"),
                        "-o", str(dataset), "--size", "512", "--no-labels", "--workers", str(workers),
                        "--no-progress"],
                       cwd=REPO, check=True)
    store = open_cells(dataset)
    table = store.table.assign(store=0, row=np.arange(len(store)), label_list=[[0]] * len(store))
    return CellSet([store], table)


def random_batches(cells, batch: int, batches: int):
    from hpasc.stages.train.data import EpochBatches

    sampler = EpochBatches(batch, drop_last=True)
    sampler.set_indices(np.random.default_rng(0).integers(0, len(cells), batches * batch))
    return sampler


def loader_rate(work: Path, workers: int, batch: int, count: int, batches: int = 40) -> tuple[float, int]:
    from hpasc.stages.train.data import TileReader

    cells = store_cells(work, workers, count)
    with TileReader(cells, 512, batch, workers, torch.device(DEVICE)) as reader:
        loader = iter(reader.batches(random_batches(cells, batch, batches + 4)))
        for _ in range(4):
            next(loader)  # workers started, slots primed
        start = time.perf_counter()
        count = sum(len(indices) for _, indices in loader)
        if DEVICE == "cuda":
            torch.cuda.synchronize()  # the last batches' copies to the GPU done
        return count / (time.perf_counter() - start), len(cells)


def epoch_rate(work: Path, workers: int, batch: int, count: int, precision: Precision,
               batches: int = 200) -> tuple[float, float, float]:
    """A whole training epoch as train_me runs it: the TileReader over the store (its workers
    decoding into page-locked slots), the Engine (augment -p, fused Adam, targets on the device,
    compiled when ``precision`` says so); images/s from the first batch's arrival (the workers'
    start-up left out), the GPU busy %, and the seconds of a first pass of 8 batches (start-up,
    cuDNN tuning and any compilation: the compile time apart)."""
    from hpasc.stages.train.data import TileReader

    cells = store_cells(work, workers, count)
    device = torch.device(DEVICE)
    process = Process(device=device)
    model = place_model(create_model("efficientnet-b0", 18), process, precision)
    engine = Engine(model, ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(512)), adam(model, 3e-4, device),
                    None, "bce", AugmentSettings.from_flags(False, True), process, precision)
    targets = torch.rand(len(cells), 18)
    options = runtime.CommonOptions(progress=False)
    busy = GpuBusy()
    with TileReader(cells, 512, batch, workers, device) as reader:
        start = time.perf_counter()
        engine.train_epoch(reader.batches(random_batches(cells, batch, 8)), targets, torch.Generator().manual_seed(0),
                           options, "")
        sync()
        first = time.perf_counter() - start
        with busy.sampling():
            start = time.perf_counter()
            engine.train_epoch(reader.batches(random_batches(cells, batch, batches)), targets,
                               torch.Generator().manual_seed(1), options, "")
            sync()
            elapsed = time.perf_counter() - start
    return batches * batch / elapsed, busy.percent, first


def training(results: Results, work: Path, workers: int, batch: int, compile_too: bool, count: int) -> None:
    torch.backends.cudnn.benchmark = True
    for dtype, channels_last in (("float16", True), ("float16", False), ("bfloat16", True), ("float32", True)):
        rate = model_step_rate(batch, Precision(dtype, channels_last), compiled=False)
        results.add("training", f"B0 512 px model step, {dtype}, channels-last "
                    f"{'on' if channels_last else 'off'}, batch {batch}", rate, "images/s")
    for dtype in ("float16", "bfloat16"):
        rate = engine_rate(batch, Precision(dtype, compile=False))
        results.add("training", f"B0 512 px Engine step (uint16 in, augment -p), {dtype}, eager", rate, "images/s")
    rate, cells = loader_rate(work, workers, batch, count)
    results.add("training", f"loader alone, {workers} workers, 512 px tiles", rate, "tiles/s", f"{cells} cells")
    for precision in (Precision("float16"), Precision("float16", compile=False), Precision("bfloat16")):
        rate, percent, first = epoch_rate(work, workers, batch, count, precision)
        how = "compiled (the default)" if precision.compile else "eager (--no-compile)"
        results.add("training", f"B0 512 px epoch from the store (TileReader, {workers} workers; Engine, augment -p), "
                    f"{precision.dtype}, {how}", rate, "images/s",
                    f"GPU busy {percent:.0f} %; first 8 batches {first:.0f} s (start-up, tuning, compiling)")
    if compile_too:
        for dtype in ("float16", "bfloat16"):
            start = time.perf_counter()
            rate = model_step_rate(batch, Precision(dtype), compiled=True)
            results.add("training", f"B0 512 px model step, {dtype}, torch.compile, batch {batch}", rate,
                        "images/s", f"incl. {time.perf_counter() - start:.0f} s compiling")


def ensemble_file(work: Path, members: int) -> Path:
    folder = work / "ensemble"
    folder.mkdir(exist_ok=True)
    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(512))
    lines = ["groups:", "  - members:"]
    for number in range(members):
        torch.manual_seed(number)
        model = create_model("efficientnet-b0", 18, tile_size=512).eval()
        save_checkpoint(folder / f"m{number}.pt", make_checkpoint(model, spec, 1, [], {}))
        lines.append(f"      - m{number}.pt")
    (folder / "ensemble.yaml").write_text("\n".join(lines) + "\n")
    return folder / "ensemble.yaml"


def inference(results: Results, work: Path, runs: list[tuple[int, int]], dtype: str, members: int,
              label_scales: list[float]) -> None:
    weights = random_weights(work)
    ensemble = ensemble_file(work, members)
    original, segmenter.load_networks = segmenter.load_networks, realistic_loader(work)
    busy = GpuBusy()
    try:
        for (workers, count), scale in itertools.product(runs, label_scales):
            images = synthetic_images(work, count)
            segmentation = SegmentationSettings("hpa", ModelFiles(nuclei=weights, cells=weights), scale, 8,
                                                Precision(dtype))
            settings = infer_stage.InferSettings(segmentation=segmentation, precision=Precision(dtype))
            clock = Clock()
            with busy.sampling():
                failed = infer_stage.infer_folder(scan_images(images), ensemble, work / f"sub-{workers}.csv", None,
                                                  settings, clock.options(workers=workers, device=DEVICE))
                seconds = time.perf_counter() - clock.start
            assert not failed, failed
            results.add("inference", f"infer_folder, {members} x B0 512 px + HPA seg, {workers} workers, {dtype}, "
                        f"label scale {scale:g}", seconds / count, "s/image",
                        f"{count} images incl. loading; {clock.note(busy)}")
    finally:
        segmenter.load_networks = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hpasc-gpu"), help="scratch folder")
    parser.add_argument("--results", type=Path, default=None, help="JSON-lines file the rows are appended to")
    parser.add_argument("--table", type=Path, default=None, help="print the rows of this file as a table")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-sizes", default="1,4,8,16,32", help="network batch sizes")
    parser.add_argument("--dtype", default="float16", choices=PRECISIONS, help="for the pipeline runs")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--images", type=int, default=559,
                        help="images of the segmentator and inference runs (559: Kaggle's test set)")
    parser.add_argument("--label-scales", default="1,0.25", help="HPA's post-processing scales of those runs")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.table:
        print_table(args.table)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.results or args.work / "results.jsonl")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    label_scales = [float(s) for s in args.label_scales.split(",")]
    for section in args.sections or SECTIONS:
        started = time.perf_counter()
        try:
            if section == "networks":
                networks(results, args.work, batch_sizes)
            elif section == "segmentator":
                segmentator(results, args.work, args.workers, 16, args.dtype, args.images, label_scales)
            elif section == "training":
                training(results, args.work, args.workers, args.train_batch, args.compile, min(args.images, 64))
            elif section == "inference":
                inference(results, args.work, [(args.workers, args.images), (2, max(args.images // 12, 1))],
                          args.dtype, 7, label_scales)
        except Exception:  # one broken section must not cost the others' figures
            traceback.print_exc()
            results.add(section, "FAILED (traceback above)", float("nan"), "")
        print(f"# {section}: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
