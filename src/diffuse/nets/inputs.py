"""Checks of the inputs that every denoiser network takes."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class InputConfig(Protocol):
    """The config fields that say what inputs a network takes (UNetConfig, DiTConfig)."""

    in_channels: int
    extra_in_channels: int
    num_classes: int
    context_dim: int
    pooled_dim: int


def check_inputs(
    net: str,
    cfg: InputConfig,
    x: Tensor,
    c_noise: Tensor,
    class_labels: Tensor | None,
    context: Tensor | None,
    context_mask: Tensor | None,
    pooled: Tensor | None,
) -> None:
    """Shapes of x, c_noise and the optional conditioning against what network `net` takes.

    Raises ValueError naming the offending input and its shape (no host synchronisation).
    """
    want = cfg.in_channels + cfg.extra_in_channels
    if x.ndim != 4 or x.shape[1] != want:
        raise ValueError(
            f"{net} expects x of shape (B, {want}, H, W) (in_channels={cfg.in_channels} + "
            f"extra_in_channels={cfg.extra_in_channels}), got {tuple(x.shape)}"
        )
    batch = x.shape[0]
    if c_noise.shape != (batch,):
        raise ValueError(f"c_noise must have shape ({batch},), got {tuple(c_noise.shape)}")
    if class_labels is not None:
        if not cfg.num_classes:
            raise ValueError(
                f"class_labels given to a {net} without class conditioning (num_classes=0)"
            )
        if class_labels.shape != (batch,):
            raise ValueError(
                f"class_labels must have shape ({batch},), got {tuple(class_labels.shape)}"
            )
    if context is not None:
        if not cfg.context_dim:
            raise ValueError(f"context given to a {net} without text conditioning (context_dim=0)")
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != cfg.context_dim:
            raise ValueError(
                f"context must have shape ({batch}, L, {cfg.context_dim}), got "
                f"{tuple(context.shape)}"
            )
        if context_mask is not None and context_mask.shape != context.shape[:2]:
            raise ValueError(
                f"context_mask must have shape {tuple(context.shape[:2])}, got "
                f"{tuple(context_mask.shape)}"
            )
    elif context_mask is not None:
        raise ValueError("context_mask given without context")
    if pooled is not None:
        if not cfg.pooled_dim:
            raise ValueError(f"pooled given to a {net} without a pooled embedding (pooled_dim=0)")
        if pooled.shape != (batch, cfg.pooled_dim):
            raise ValueError(
                f"pooled must have shape ({batch}, {cfg.pooled_dim}), got {tuple(pooled.shape)}"
            )
