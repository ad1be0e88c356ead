"""Data-parallel training on PyTorch's own engine: torchrun sets the environment, this joins it.

`torchrun --nproc_per_node=N scripts/train.py …` starts N copies; each calls `World.join`, which
initializes the process group (NCCL on GPUs, gloo on CPUs) when WORLD_SIZE > 1 and is a
no-op otherwise, so the same code runs alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from wavenet.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def join(cls, device: torch.device) -> tuple[World, torch.device]:
        """Join the torchrun job this process belongs to, if any.

        Returns the world and this process's device (its own GPU under torchrun).
        """
        if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
            _export_submitit_environment()
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls(), device
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if local >= torch.cuda.device_count():
                raise UserError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} GPUs "
                                "are visible: start at most that many processes per node")
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=timedelta(minutes=30))
        return cls(rank, size, local), device

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on any (stop requests, non-finite steps)."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: float, device: torch.device) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.item() / self.size

    def leave(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _export_submitit_environment() -> None:
    """Under submitit (hydra/launcher=cluster), a job with several tasks becomes one torch
    distributed run: its tasks' ranks and address go where torchrun would put them."""
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
