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
from diffuse.denoiser import Denoiser
from diffuse.model_folder import TrainedModel
from diffuse.nets.controlnet import ControlledUNet, ControlNet
from diffuse.pipelines.image_to_image import strength_level
from diffuse.processes.base import NoiseProcess

__all__ = [
    "CONFIG",
    "WEIGHTS",
    "control_cond",
    "control_record",
    "control_window",
    "controlled",
    "controlled_denoiser",
    "controlled_net",
    "load_controlnet",
    "save_controlnet",
]


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


def control_window(process: NoiseProcess, start: float, end: float) -> tuple[float, float]:
    """The network's c_noise interval in which a ControlNet acts from strength `start` down to
    `end` (the img2img strength axis: 1 = level_max, 0 = level 0; `strength_level`).

    Raises:
        ValueError: unless 0 <= end < start <= 1 (both named).
    """
    if not 0.0 <= end < start <= 1.0:
        raise ValueError(
            f"control start/end must satisfy 0 <= end < start <= 1, got {start}, {end}"
        )

    def code(strength: float, edge: float) -> float:
        if strength <= 0.0:
            return edge
        level = torch.tensor(strength_level(process, strength), dtype=torch.float64)
        return float(process.c_noise(process.t_from_level(level)))

    return code(end, -math.inf), code(start, math.inf) if start < 1.0 else math.inf


def controlled_net(
    model: TrainedModel,
    controlnet: ControlNet,
    scale: float = 1.0,
    start: float = 1.0,
    end: float = 0.0,
) -> ControlledUNet:
    """The model's network steered by `controlnet` (the base's weights are shared, not copied).

    Args: as `controlled`.
    Raises:
        ValueError: a scale that is not a finite number >= 0, a bad start/end.
    """
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"control scale must be a finite number >= 0, got {scale}")
    window = control_window(model.denoiser.process, start, end)
    base = model.denoiser.net
    return ControlledUNet(base, controlnet.to(next(base.parameters()).device), scale, window)


def controlled_denoiser(
    model: TrainedModel,
    controlnet: ControlNet,
    scale: float = 1.0,
    start: float = 1.0,
    end: float = 0.0,
) -> Denoiser:
    """A denoiser like the model's, running `controlled_net`; the model itself is untouched, so
    controlled and plain calls may run side by side (a server's jobs do)."""
    d = model.denoiser
    net = controlled_net(model, controlnet, scale, start, end)
    return Denoiser(net, d.process, d.parametrization, d.sigma_data).eval()


def control_cond(control: Tensor, device: torch.device | str) -> dict[str, Tensor]:
    """The conditioning entry to add to cond and uncond for a control map [C, H, W] or
    [B, C, H, W]."""
    control = control if control.ndim == 4 else control[None]
    return {"control": control.to(device)}


def control_record(
    folder: str | os.PathLike,
    control: str,
    kind: str,
    control_hash: str,
    scale: float,
    start: float,
    end: float,
) -> dict[str, object]:
    """What every PNG made with a ControlNet stores besides the generation parameters.

    Args:
        folder: the ControlNet folder; control: where the control picture came from ("" for
            an upload); kind: the map's kind; control_hash: `image_to_image.image_hash` of the
            picture's pixels; scale, start, end: as `controlled`.
    """
    return {
        "controlnet": str(folder),
        "control": str(control),
        "control_kind": kind,
        "control_hash": control_hash,
        "control_scale": scale,
        "control_start": start,
        "control_end": end,
    }


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
    denoiser = model.denoiser
    base = denoiser.net
    denoiser.net = controlled_net(model, controlnet, scale, start, end)
    device = next(base.parameters()).device
    try:
        yield lambda control: control_cond(control, device)
    finally:
        denoiser.net = base
