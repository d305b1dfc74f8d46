"""Running HPA's nuclei and cell networks on batches of prepared images (see ``scaling``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from hpasc.models.pinning import page_locker
from hpasc.models.precision import Precision
from hpasc.segmentation.scaling import NetworkInput

# HPA's normalisation of the [0, 1] inputs.
MEAN = (124 / 255, 117 / 255, 104 / 255)
STD = 1 / (0.0167 * 255)


class HpaNetworks:
    """The nuclei and cell networks on one device, run on batches of prepared images.

    On CUDA the networks run under ``precision`` (autocast dtype and memory layout); on the CPU in
    float32, as HPA's code does. The softmax is float32 always.
    """

    def __init__(self, nuclei_model: torch.nn.Module, cell_model: torch.nn.Module, device: str,
                 precision: Precision = Precision()):
        self.device, self.precision = torch.device(device), precision
        self.memory_format = precision.memory_format(self.device)
        self.nuclei_model = nuclei_model.to(self.device, memory_format=self.memory_format).eval()
        self.cell_model = cell_model.to(self.device, memory_format=self.memory_format).eval()
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)

    def page_locker(self) -> Callable[[memoryview], Callable[[], None]] | None:
        """How host memory that feeds these networks is page-locked (None: not on this device)."""
        return page_locker(self.device)

    def __call__(self, batch: list[NetworkInput]) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities (N×3×h×w float32) of the nuclei and the cell network.

        All inputs of a batch must have the same padded size.
        """
        planes = [p.cells for p in batch]
        nuclei, cells = (np.empty((len(planes), *planes[0].shape), np.float32) for _ in range(2))
        self.run(planes, list(zip(nuclei, cells)))
        return nuclei, cells

    @torch.inference_mode()
    def run(self, planes: Sequence[np.ndarray], maps: Sequence[Sequence[np.ndarray]]) -> None:
        """:meth:`__call__` from the images' cell inputs (3×h×w float32 each, e.g. in shared memory)
        into each image's (nuclei, cells) maps (two 3×h×w float32 arrays, e.g. in shared memory).
        Each input is copied once, straight into the device's batch, and each map once, straight
        from the device into its array (both asynchronous where the host memory is page-locked);
        the nuclei network's input (the blue plane three times) is made on the device. Returns when
        every copy is done: the inputs may be reused and the maps read."""
        tensor = torch.empty((len(planes), *planes[0].shape), dtype=torch.float32, device=self.device)
        for index, image in enumerate(planes):
            tensor[index].copy_(torch.from_numpy(image), non_blocking=True)
        nuclei_inputs = tensor[:, 2:3].expand(-1, 3, -1, -1)
        for which, (model, inputs) in enumerate(((self.nuclei_model, nuclei_inputs), (self.cell_model, tensor))):
            probabilities = self._run(model, inputs)
            for index, image_maps in enumerate(maps):
                torch.from_numpy(image_maps[which]).copy_(probabilities[index], non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def _run(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        tensor = ((inputs - self.mean) / STD).contiguous(memory_format=self.memory_format)
        with self.precision.autocast(self.device):
            logits = model(tensor)
        return torch.softmax(logits.float(), dim=1)
