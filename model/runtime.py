"""Where training runs: the device (``--device auto|cpu|cuda[:N]``) and, under torchrun, the process group.

A plain ``python -m model.train`` is one process on one device. Launched by ``torchrun`` (which sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous), every process joins one PyTorch process group (NCCL on GPUs,
gloo on CPUs) and takes the GPU of its local rank; ``model.training.fit`` then shards the data and
averages gradients (DDP), and only rank 0 writes files and logs. There is no launcher of our own.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from contract import UserError

DEVICE_HELP = ("auto (CUDA when present), cpu, cuda or cuda:N; under torchrun each process takes the GPU of "
               "its local rank")


@dataclass(frozen=True)
class Runtime:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress bars and writes checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else the CPU. ``cuda`` -> the GPU of this process's local
    rank (GPU 0 without torchrun). A missing or out-of-range GPU is a user error, not a silent CPU run."""
    spec = name.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise UserError(f"--device {name}: torch {torch.__version__} sees no CUDA device; "
                        f"use --device cpu (or auto)")
    if match.group(1) is not None and world_size > 1:
        raise UserError(f"--device {name} under torchrun would put every process on one GPU; use --device cuda "
                        f"(each process takes the GPU of its local rank)")
    index = int(match.group(1)) if match.group(1) is not None else local_rank
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: GPU {index} does not exist ({torch.cuda.device_count()} visible)")
    return torch.device("cuda", index)


@contextmanager
def runtime(device: str = "auto") -> Iterator[Runtime]:
    """The runtime of this process; joins (and finally leaves) the torchrun process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Runtime(resolve_device(device))
        return
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield Runtime(dev, rank, world, local_rank)
    finally:
        dist.destroy_process_group()
