"""Running HPA's nuclei and cell networks on batches of prepared images (see ``scaling``)."""

from __future__ import annotations

import numpy as np
import torch

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

    @torch.inference_mode()
    def __call__(self, batch: list[NetworkInput]) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities (N×3×h×w float32) of the nuclei and the cell network.

        All inputs of a batch must have the same padded size.
        """
        nuclei = self._run(self.nuclei_model, np.stack([p.nuclei for p in batch]))
        cells = self._run(self.cell_model, np.stack([p.cells for p in batch]))
        return nuclei, cells

    def _run(self, model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(inputs).to(self.device, non_blocking=True)
        tensor = ((tensor - self.mean) / STD).contiguous(memory_format=self.memory_format)
        with self.precision.autocast(self.device):
            logits = model(tensor)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
