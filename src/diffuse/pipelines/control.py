"""Loading a ControlNet next to a frozen base model, and steering that model with it.

The folder format lives in `diffuse.controlnet_folder` (training writes it too); these
wrappers take the loaded base model. Loading a ControlNet for another base is an error naming
both hashes.

    controlnet = load_controlnet("models/shapes-controlnet-edges", pipe.model)
    with controlled(pipe.model, controlnet, scale=1.0, start=1.0, end=0.0) as extra:
        images = pipe.generate(params, extra_cond=extra(edge_map(pixels)))
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from diffuse import controlnet_folder
from diffuse.controlnet_folder import CONFIG, WEIGHTS
from diffuse.model_folder import TrainedModel
from diffuse.nets.controlnet import ControlledUNet, ControlNet
from diffuse.pipelines.image_to_image import strength_level

__all__ = ["CONFIG", "WEIGHTS", "controlled", "load_controlnet", "save_controlnet"]


def save_controlnet(
    folder: str | os.PathLike,
    net: ControlNet,
    base: TrainedModel,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a ControlNet folder recording the base model it steers (`controlnet_folder`)."""
    return controlnet_folder.save_controlnet(folder, net, base.folder, dtype=dtype)


def load_controlnet(folder: str | os.PathLike, base: TrainedModel) -> ControlNet:
    """Load a ControlNet and check it was built for `base`.

    Raises:
        FileNotFoundError: no ControlNet there.
        ValueError: built for another base model (both hashes named), or a damaged file.
    """
    return controlnet_folder.load_controlnet(folder, base.folder)


@contextmanager
def controlled(
    model: TrainedModel,
    controlnet: ControlNet,
    scale: float = 1.0,
    start: float = 1.0,
    end: float = 0.0,
) -> Iterator[Callable[[Tensor], dict[str, Tensor]]]:
    """Run `model` steered by `controlnet` inside the block.

    Args:
        model: the base model (its network is swapped for a `ControlledUNet` in the block).
        controlnet: built for the model.
        scale: residual scale; 0 is the base model bit for bit.
        start, end: the control acts from strength `start` down to `end` on the img2img
            strength axis (1 = level_max, 0 = level 0; `image_to_image.strength_level`).
    Yields:
        extra(control) -> the conditioning entry to add to cond and uncond, for a control
        map [C, H, W] or [B, C, H, W].
    """
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"control scale must be a finite number >= 0, got {scale}")
    if not 0.0 <= end < start <= 1.0:
        raise ValueError(
            f"control start/end must satisfy 0 <= end < start <= 1, got {start}, {end}"
        )
    denoiser = model.denoiser
    process = denoiser.process

    def code(strength: float, edge: float) -> float:
        if strength <= 0.0:
            return edge
        level = torch.tensor(strength_level(process, strength), dtype=torch.float64)
        return float(process.c_noise(process.t_from_level(level)))

    window = (code(end, -math.inf), code(start, math.inf) if start < 1.0 else math.inf)
    base = denoiser.net
    denoiser.net = ControlledUNet(
        base, controlnet.to(next(base.parameters()).device), scale, window
    )

    def extra(control: Tensor) -> dict[str, Tensor]:
        control = control if control.ndim == 4 else control[None]
        return {"control": control.to(next(base.parameters()).device)}

    try:
        yield extra
    finally:
        denoiser.net = base
