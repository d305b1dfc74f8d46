"""Running HPA's nuclei and cell networks on batches of prepared images (see ``scaling``)."""

from __future__ import annotations

import numpy as np
import torch

from hpasc.segmentation.scaling import NetworkInput

# HPA's normalisation of the [0, 1] inputs.
MEAN = (124 / 255, 117 / 255, 104 / 255)
STD = 1 / (0.0167 * 255)


class HpaNetworks:
    """The nuclei and cell networks on one device, run on batches of prepared images.

    With ``mixed_precision`` (the default) on CUDA, the networks run in float16 autocast with
    channels-last memory; otherwise in float32 as HPA's code does. The softmax is float32 always.
    """

    def __init__(self, nuclei_model: torch.nn.Module, cell_model: torch.nn.Module, device: str,
                 mixed_precision: bool = True):
        self.device = torch.device(device)
        self.fast = mixed_precision and self.device.type == "cuda"
        memory = torch.channels_last if self.fast else torch.contiguous_format
        self.nuclei_model = nuclei_model.to(self.device, memory_format=memory).eval()
        self.cell_model = cell_model.to(self.device, memory_format=memory).eval()
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
        tensor = (tensor - self.mean) / STD
        if self.fast:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fast):
            logits = model(tensor)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
