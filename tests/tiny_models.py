"""The tiny class-conditional U-Net and pixel recipe that model-folder and training tests
build on the fly."""

from __future__ import annotations

import dataclasses

import torch

from diffuse import nets

TINY_PIXEL_RECIPE = [
    "model.preset='unet-tiny'",
    "model.overrides={base_channels=8, num_groups=4, head_channels=8}",
    "data.source='procedural'",
    "data.resolution=8",
    "data.size=40",
    "data.channels=1",
    "data.num_classes=3",
]
"""`--set` lines of a tiny class-conditional pixel recipe (procedural data, 8x8, 3 classes)."""


def tiny_unet(channels: int = 1, size: int = 8, seed: int = 0) -> nets.UNet:
    """A tiny class-conditional (3 classes) U-Net, initialised from `seed`."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(
        nets.get_config("unet-tiny"),
        in_channels=channels,
        out_channels=channels,
        image_size=size,
        num_classes=3,
        base_channels=8,
        num_groups=4,
        head_channels=8,
    )
    return nets.build_network(cfg)
