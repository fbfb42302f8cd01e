"""Exponential moving average of network weights, its half-life counted in images."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMA", "ema_beta"]


def ema_beta(batch_images: int, halflife_images: float) -> float:
    """Per-step decay so that the weight of a past step halves every `halflife_images` images.

    beta = 0.5 ** (B / h) (Karras et al. 2022, EDM training_loop.py; EDM2 phema.py): the same
    half-life in images gives the same average whatever the batch size.
    """
    return 0.5 ** (batch_images / max(halflife_images, 1e-8))


class EMA:
    """A frozen copy of a network whose weights track an exponential moving average.

    Args:
        net: the trained network (not wrapped in DDP or torch.compile).
        halflife_images: half-life of the average in training images.
        rampup: if > 0, the half-life is at most `rampup` x images seen so far.
    """

    def __init__(self, net: nn.Module, halflife_images: float, rampup: float = 0.0) -> None:
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self.halflife_images = float(halflife_images)
        self.rampup = float(rampup)

    def halflife(self, images_seen: int) -> float:
        """The half-life in effect after `images_seen` training images."""
        if self.rampup > 0:
            return min(self.halflife_images, images_seen * self.rampup)
        return self.halflife_images

    @torch.no_grad()
    def update(self, net: nn.Module, batch_images: int, images_seen: int) -> float:
        """Move the average towards `net` after a step of `batch_images` images.

        Args:
            net: the trained network, with the same structure as the average.
            batch_images: images in the step just taken (the global batch).
            images_seen: total images seen including this step.
        Returns:
            the decay beta used.
        """
        beta = ema_beta(batch_images, self.halflife(images_seen))
        ema_params = list(self.module.parameters())
        params = list(net.parameters())
        if len(ema_params) != len(params):
            raise ValueError("EMA and network have different parameter lists")
        # Frozen parameters never move, so their average stays equal to them: skipped.
        pairs = [(e, p.detach()) for e, p in zip(ema_params, params) if p.requires_grad]
        if pairs:
            ema_moving, moving = (list(t) for t in zip(*pairs))
            torch._foreach_lerp_(ema_moving, moving, 1.0 - beta)  # ema += (1 - beta)(p - ema)
        for b_ema, b in zip(self.module.buffers(), net.buffers()):
            b_ema.copy_(b)
        return beta

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (the module's state dict)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore averaged weights saved by `state_dict`."""
        self.module.load_state_dict(state)
