"""The control maps of a ControlNet run: one per training image, computed once from the
image's pixels by `codecs.controls` (the same code that makes a user's control image), kept
as uint8 in memory and given per batch as float [B, C, H, W] in {0, 1}.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from diffuse.codecs.controls import control_map
from diffuse.training.data import TrainData

logger = logging.getLogger(__name__)

__all__ = ["ControlMaps"]


class ControlMaps:
    """Control maps of every image of `data`.

    Args:
        kind: the control kind (`codecs.controls.CONTROL_MAPS`).
        data: the training data (its pixels, before any codec).
        chunk: images prepared at once.
    """

    def __init__(self, kind: str, data: TrainData, chunk: int = 512) -> None:
        self.kind = kind
        parts = []
        for start in range(0, len(data), chunk):
            pixels = data.pixels(range(start, min(len(data), start + chunk)))
            if pixels.shape[-1] == 1:  # control maps are computed on RGB
                pixels = np.repeat(pixels, 3, axis=-1)
            maps = torch.stack([control_map(kind, p) for p in pixels])  # [b, C, H, W]
            parts.append(maps.to(torch.uint8))
        self.maps = torch.cat(parts)  # [N, C, H, W] uint8 in {0, 1}
        logger.info("%s control maps of %d images", kind, len(data))

    def batch(self, indices: Sequence[int]) -> Tensor:
        """Float control maps [B, C, H, W] of `indices`."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.maps[idx].float()
