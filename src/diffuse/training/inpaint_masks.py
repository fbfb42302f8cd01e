"""Random masks for training an inpainting model, and the extra inputs made from them.

Each training image gets its own mask, drawn from a generator seeded by (run seed, step,
position in the global batch), so a resumed run draws the same masks. The mix:

- "box" (30%): an axis-aligned rectangle, each side 1/4 to 3/4 of the image;
- "blob" (20%): the union of one to three discs, radius 1/10 to 1/4 of the image;
- "object" (40%): the 3 x 3 grid cell of one object of a Shapes scene, rounded outwards (what
  replacing an object masks); a box for data without scenes;
- "all" (10%): the whole image, so the model still draws from the prompt alone.

Masks are made at pixel resolution and max-pooled to the network's (a latent cell is generated
when any of its pixels is), as at sampling time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from diffuse.denoiser import inpainting_inputs
from diffuse.training.counter_rng import mix_seeds
from diffuse.training.data import TrainData
from diffuse.training.datasets import ScenesDataset

__all__ = ["MASK_MIX", "InpaintMasks", "draw_mask"]

MASK_MIX: tuple[tuple[str, float], ...] = (
    ("box", 0.3),
    ("blob", 0.2),
    ("object", 0.4),
    ("all", 0.1),
)
"""Mask kinds and their probabilities."""


def _box(rng: np.random.Generator, size: int) -> np.ndarray:
    h, w = rng.integers(size // 4, 3 * size // 4 + 1, 2)
    top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    mask = np.zeros((size, size), np.float32)
    mask[top : top + h, left : left + w] = 1
    return mask


def _blob(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] + 0.5
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 10, size / 4)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return mask.astype(np.float32)


def _cell(row: int, col: int, size: int) -> np.ndarray:
    top, bottom = int(np.floor(row * size / 3)), int(np.ceil((row + 1) * size / 3))
    left, right = int(np.floor(col * size / 3)), int(np.ceil((col + 1) * size / 3))
    mask = np.zeros((size, size), np.float32)
    mask[top:bottom, left:right] = 1
    return mask


def draw_mask(rng: np.random.Generator, size: int, cells: Sequence[tuple[int, int]]) -> np.ndarray:
    """One random mask [size, size] (float32, 1 = generate) from the mix `MASK_MIX`.

    Args:
        rng: the sample's generator.
        size: the image side in pixels.
        cells: (row, col) of the image's objects on the 3 x 3 grid (empty: none known).
    """
    kinds, weights = zip(*MASK_MIX)
    kind = kinds[int(rng.choice(len(kinds), p=np.asarray(weights) / sum(weights)))]
    if kind == "all":
        return np.ones((size, size), np.float32)
    if kind == "object" and cells:
        return _cell(*cells[int(rng.integers(len(cells)))], size)
    return _blob(rng, size) if kind == "blob" else _box(rng, size)


class InpaintMasks:
    """The masks and extra inputs of an inpainting run.

    Args:
        data: the training data (Shapes scenes give their objects' cells).
        pixels: the image side in pixels.
        factor: pixels per network pixel (the codec's downsampling; 1 in pixel space).
    """

    def __init__(self, data: TrainData, pixels: int, factor: int) -> None:
        self.pixels, self.factor = pixels, factor
        self.dataset = data.dataset if isinstance(data.dataset, ScenesDataset) else None

    def _cells(self, index: int) -> list[tuple[int, int]]:
        if self.dataset is None:
            return []
        return [(o.row, o.col) for o in self.dataset.scenes.scene(index).objects]

    def masks(self, indices: Sequence[int], seed: int, first: int) -> Tensor:
        """Masks [B, 1, h, w] at the network's resolution for the samples at global batch
        positions first, first + 1, ... of a step whose seed is `seed`."""
        out = []
        for j, index in enumerate(indices):
            rng = np.random.Generator(np.random.PCG64(mix_seeds(seed, first + j, 0x1A5C)))
            out.append(draw_mask(rng, self.pixels, self._cells(int(index))))
        mask = torch.from_numpy(np.stack(out))[:, None]
        return mask if self.factor == 1 else F.max_pool2d(mask, self.factor)

    def extra_inputs(self, indices: Sequence[int], seed: int, first: int, x0: Tensor) -> Tensor:
        """The cond entry EXTRA_INPUTS [B, 1 + C, h, w] for clean inputs `x0`."""
        return inpainting_inputs(x0, self.masks(indices, seed, first).to(x0.device))
