"""The trained network as each process holds it: plain, DDP- or FSDP-wrapped, maybe compiled.

The torch.distributed.fsdp and .checkpoint imports stay inside the methods that need them:
importing them costs ~0.9 s on top of torch (measured with `python -X importtime`), which every
single-process run and `diffuse train --dry-run` would otherwise pay.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from diffuse.config import TrainConfig
from diffuse.training import dist
from diffuse.training.model import count_parameters

__all__ = ["Replica", "use_fsdp"]


def use_fsdp(cfg: TrainConfig, info: dist.DistInfo, net: nn.Module) -> bool:
    """FSDP when asked, or in "auto" when weights + grads + Adam moments (16 bytes per
    parameter) would take more than half of one device."""
    if not info.distributed or cfg.train.strategy == "ddp":
        return False
    if cfg.train.strategy == "fsdp":
        return True
    if info.device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(info.device).total_memory
    return 16 * count_parameters(net) > total / 2


class Replica:
    """The trained network as the loop sees it: plain, DDP- or FSDP-wrapped, maybe compiled.

    Gives full (unsharded) state dicts on rank 0 and loads full state dicts on every rank, so
    checkpoints do not depend on how the network was distributed.
    """

    def __init__(self, net: nn.Module, cfg: TrainConfig, info: dist.DistInfo) -> None:
        self.net = net  # the master fp32 module (parameters shared with the wrappers)
        self.info = info
        self.fsdp = use_fsdp(cfg, info, net)
        self.ddp: nn.Module | None = None
        wrapped: nn.Module = net
        if self.fsdp:
            self.shard(net)
        elif info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            self.ddp = wrapped = DistributedDataParallel(net, device_ids=ids)
        if cfg.train.compile:
            wrapped = torch.compile(wrapped)
        self.forward_module = wrapped

    @staticmethod
    def shard(module: nn.Module) -> None:
        """FSDP2: shard every top-level block (each entry of a ModuleList), then the root."""
        from torch.distributed.fsdp import fully_shard

        for child in module.children():
            blocks = list(child) if isinstance(child, (nn.ModuleList, nn.Sequential)) else [child]
            for block in blocks:
                if isinstance(block, nn.Module) and any(True for _ in block.parameters()):
                    fully_shard(block)
        fully_shard(module)

    def no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch."""
        if self.ddp is not None and not last:
            return self.ddp.no_sync()
        if self.fsdp and not last:
            self.net.set_requires_gradient_sync(False)
        elif self.fsdp:
            self.net.set_requires_gradient_sync(True)
        return contextlib.nullcontext()

    def full_state(self, module: nn.Module) -> dict[str, Tensor]:
        """Full state dict of `module` (collective under FSDP), on the CPU."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(module, options=opts)
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}

    def load_full_state(self, module: nn.Module, state: dict[str, Tensor]) -> None:
        """Load a full state dict into `module` (sharding it under FSDP)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
        else:
            module.load_state_dict(state)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Full optimizer state dict, keyed by parameter names (collective under FSDP)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.net, optimizer, options=opts)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load a state from `optimizer_state` (on every rank)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        # strict=False: a parameter that never had a gradient has no AdamW state, in the
        # checkpoint as in the uninterrupted run (e.g. a video network's temporal layers after
        # only single-frame steps, or its frame-rate map in a run without frame rates).
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(self.net, optimizer, state, options=options)
