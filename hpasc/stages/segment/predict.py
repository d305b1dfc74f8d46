"""Running HPA's nuclei and cell networks on batches of prepared images (see ``scaling``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from hpasc.models.pinning import page_locker
from hpasc.models.precision import Precision
from hpasc.stages.segment.scaling import NetworkInput

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
        return self.run([p.cells for p in batch])

    @torch.inference_mode()
    def run(self, planes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`__call__` on the images' cell inputs (3×h×w float32 each, e.g. in shared memory):
        each is copied once, straight into the device's batch (asynchronously from page-locked
        memory), and the nuclei network's input (the blue plane three times) is made there. The
        inputs may be reused once this returns."""
        tensor = torch.empty((len(planes), *planes[0].shape), dtype=torch.float32, device=self.device)
        for index, image in enumerate(planes):
            tensor[index].copy_(torch.from_numpy(image), non_blocking=True)
        nuclei = self._run(self.nuclei_model, tensor[:, 2:3].expand(-1, 3, -1, -1))
        return nuclei, self._run(self.cell_model, tensor)

    def _run(self, model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
        tensor = ((inputs - self.mean) / STD).contiguous(memory_format=self.memory_format)
        with self.precision.autocast(self.device):
            logits = model(tensor)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
