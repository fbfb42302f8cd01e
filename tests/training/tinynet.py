"""A very small conditional network for fast training-loop tests (not a shipped model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TinyConfig:
    in_channels: int = 1
    image_size: int = 8
    num_classes: int = 0
    width: int = 8


class TinyNet(nn.Module):
    """conv -> (+ noise and class embedding) -> SiLU -> conv."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.config = cfg
        self.inp = nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1)
        self.noise = nn.Linear(1, cfg.width)
        self.classes = nn.Embedding(cfg.num_classes + 1, cfg.width) if cfg.num_classes else None
        self.out = nn.Conv2d(cfg.width, cfg.in_channels, 3, padding=1)

    def forward(self, x, c_noise, *, class_labels=None, **_):
        h = self.inp(x)
        emb = self.noise(c_noise.reshape(-1, 1).to(x.dtype))  # [B, W]
        if self.classes is not None and class_labels is not None:
            emb = emb + self.classes(class_labels)
        h = torch.nn.functional.silu(h + emb[:, :, None, None])
        return self.out(h)


def tiny_builder(model_cfg, *, in_channels, image_size, num_classes):
    """`net_builder` for `train`: ignores the preset, builds a TinyNet."""
    cfg = TinyConfig(in_channels, image_size, num_classes, **model_cfg.overrides)
    return TinyNet(cfg), cfg
