"""Training a ControlNet next to a frozen base model on Shapes scenes.

The base network stays frozen; only the ControlNet learns, with the base's own denoising loss
(`losses.denoising_loss`) through a `ControlledUNet`: the renderer's scenes give the image, its
caption and the control map computed from the render (`codecs.controls`), exactly.

    controlnet = train_controlnet(base, "edges", steps=2000, batch_size=32)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffuse.codecs.controls import control_map
from diffuse.codecs.text_encoder import TextEncoder
from diffuse.denoiser import Denoiser
from diffuse.losses import denoising_loss
from diffuse.model_folder import TrainedModel
from diffuse.nets.controlnet import ControlledUNet, ControlNet, ControlNetConfig
from diffuse.shapes.dataset import ShapesDataset

__all__ = ["ControlNetRecipe", "train_controlnet"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlNetRecipe:
    """How a ControlNet is trained.

    Args:
        kind: the control kind ("edges" or "layout").
        steps: optimizer steps.
        batch_size: scenes per step.
        lr: AdamW learning rate.
        scenes: size of the training scene set (Shapes "train" split, stream `seed`).
        seed: scene stream and noise seed.
    """

    kind: str = "edges"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    scenes: int = 20000
    seed: int = 0


def train_controlnet(
    base: TrainedModel, recipe: ControlNetRecipe, encoder: TextEncoder | None = None
) -> tuple[ControlNet, list[float]]:
    """Train a ControlNet for `base` (kept frozen) from its own encoder weights.

    Args:
        base: the text-to-image model the ControlNet steers.
        recipe: kind, steps, batch size, learning rate, scenes, seed.
        encoder: the model's text encoder (loaded from its info when None).
    Returns:
        (the ControlNet, the loss of every step).
    """
    net = base.denoiser.net
    resolution = base.image_size
    config = ControlNetConfig(recipe.kind, base.codec.downsample, net.config)
    controlnet = ControlNet.from_base(net, config).train()
    controlled = ControlledUNet(net, controlnet)
    denoiser = Denoiser(
        controlled,
        base.denoiser.process,
        base.info.process.parametrization,
        sigma_data=base.info.process.sigma_data,
    )
    if encoder is None:
        name = base.info.text_encoder
        encoder = TextEncoder(None if name == "default" else name)
    scenes = ShapesDataset(resolution, split="train", length=recipe.scenes, seed=recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=recipe.lr, weight_decay=0.0)
    losses = []
    for step in range(recipe.steps):
        rows = rng.integers(0, len(scenes), recipe.batch_size)
        pixels = [scenes.image_uint8(int(i)) for i in rows]
        images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            latents = base.codec.encode(images)
            cond = encoder.encode([scenes.caption(int(i)) for i in rows]).as_cond()
        hints: Tensor = torch.stack([control_map(recipe.kind, p) for p in pixels])
        loss = denoising_loss(denoiser, latents, cond | {"control": hints}, generator=generator)
        loss = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            logger.info("controlnet step %d loss %.4f", step, losses[-1])
    return controlnet.eval().requires_grad_(False), losses
