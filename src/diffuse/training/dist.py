"""Process groups for multi-process training (torchrun), and helpers that are no-ops alone.

`torchrun --nproc-per-node N -m diffuse train ...` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `setup` reads them, initialises NCCL on CUDA or gloo on CPU, and
picks this rank's device. A single process (no WORLD_SIZE) never touches torch.distributed.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

logger = logging.getLogger(__name__)

__all__ = ["DistInfo", "all_reduce_mean", "barrier", "broadcast_object", "cleanup", "setup"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True if `setup` created the process group (and should end it)

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and samples."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """The device of train.device = `preference` ("auto", "cpu", "cuda") for this rank."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but no CUDA device is available")
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that torchrun describes in the environment, if any.

    Args:
        device: "auto" (CUDA if available), "cpu" or "cuda".
        timeout_s: collective timeout.
    Returns:
        this process's DistInfo.
    """
    if tdist.is_available() and tdist.is_initialized():  # set up by the caller (tests, spawn)
        rank, world = tdist.get_rank(), tdist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, pick_device(device, local), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(device, 0))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    tdist.init_process_group(
        backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
    )
    logger.info("rank %d/%d on %s (%s)", rank, world, dev, backend)
    return DistInfo(rank, world, local, dev, owns_group=True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if `setup` created it."""
    if info.owns_group and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op alone)."""
    if info.distributed:
        tdist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `value` over ranks (returns `value` alone)."""
    if not info.distributed:
        return value
    out = value.detach().clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out / info.world_size


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (plain picklable data only; returns `obj` alone)."""
    if not info.distributed:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]
