"""One process or many: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK, and the same training code
runs under DistributedDataParallel (NCCL on CUDA, Gloo on CPU) without any flag. Under torchrun the
process group is joined even by a single process, so ``--nproc_per_node 1`` runs the DDP path
that more processes run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpasc.core.errors import InputError
from hpasc.core.runtime import resolve_device


@dataclass(frozen=True)
class Process:
    """This process's place in the run and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False
    """Launched by torchrun: in a process group, the model wrapped in DDP."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all processes."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def start(device_name: str) -> Process:
    """Join the torchrun process group when launched by torchrun, else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(resolve_device(device_name))
    if "LOCAL_RANK" not in os.environ:
        return Process(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"torchrun started {world_size} processes per node but only "
                             f"{torch.cuda.device_count()} GPU(s) are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, distributed=True)


def stop(process: Process) -> None:
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
