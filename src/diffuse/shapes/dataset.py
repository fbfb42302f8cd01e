"""`ShapesDataset`: procedural Shapes images with captions, deterministic by (seed, index)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffuse.shapes.grammar import heldout_grammar_caption, training_caption
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import Scene, caption, paraphrase, sample_split_scene

__all__ = ["ShapesDataset", "collate_shapes", "to_float_image"]

# Caption kinds -> the function writing them (scene, seed, index) -> str.
CAPTIONERS = {
    "train": caption,
    "paraphrase": paraphrase,
    "grammar": training_caption,
    "heldout-grammar": heldout_grammar_caption,
}

# Default lengths: the generator is unbounded, these are just epoch sizes.
DEFAULT_LENGTHS = {
    "train": 100_000,
    "heldout": 1_000,
    "heldout-1": 1_000,
    "heldout-2": 1_000,
    "heldout-3": 1_000,
}


def to_float_image(image: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1] (x / 127.5 - 1, exact round trip)."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ShapesDataset(torch.utils.data.Dataset):
    """Shapes scenes rendered at `size` px with one caption each.

    `dataset[i]` is `(image, caption, scene)`: image float32 [3, size, size] in [-1, 1] (the
    layout networks and codecs take; `image_uint8(i)` gives the uint8 HWC render), the caption
    string, and the structured `Scene`. Everything is a pure function of (seed, split, index),
    so workers, restarts and machines agree without shared state.

    Args:
        size: image side in pixels (32 or 64; any value >= 16 renders).
        split: "train" (never a held-out object pair or lone held-out object), "heldout"
            (one to three objects), or "heldout-1" / "-2" / "-3" (that many objects).
        length: number of items; default 100,000 for train, 1,000 for heldout.
        seed: selects an independent stream of scenes.
        captions: "train" (training templates), "paraphrase" (disjoint vocabulary, for
            evaluating generalisation), "grammar" (the templates mixed with the caption grammar
            people write, `diffuse.shapes.grammar.training_caption`) or "heldout-grammar" (its
            held-out forms and words).
    """

    def __init__(
        self,
        size: int = 32,
        split: str = "train",
        length: int | None = None,
        seed: int = 0,
        captions: str = "train",
    ) -> None:
        if split not in DEFAULT_LENGTHS:
            raise ValueError(f"split must be one of {', '.join(DEFAULT_LENGTHS)}, got {split!r}")
        if captions not in CAPTIONERS:
            raise ValueError(f"captions must be one of {', '.join(CAPTIONERS)}, got {captions!r}")
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        length = DEFAULT_LENGTHS[split] if length is None else length
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.size, self.split, self.length, self.seed = size, split, length, seed
        self.captions = captions

    def __len__(self) -> int:
        return self.length

    def _index(self, index: int) -> int:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        return index % self.length

    def scene(self, index: int) -> Scene:
        """The structured scene of item `index`."""
        return sample_split_scene(self.seed, self._index(index), self.split)

    def caption(self, index: int) -> str:
        """The caption of item `index`."""
        index = self._index(index)
        return CAPTIONERS[self.captions](self.scene(index), self.seed, index)

    def image_uint8(self, index: int) -> np.ndarray:
        """The render of item `index`, uint8 [size, size, 3]."""
        return render_scene(self.scene(index), self.size)

    def __getitem__(self, index: int) -> tuple[Tensor, str, Scene]:
        index = self._index(index)
        scene = self.scene(index)
        text = CAPTIONERS[self.captions](scene, self.seed, index)
        return to_float_image(render_scene(scene, self.size)), text, scene


def collate_shapes(
    batch: list[tuple[Tensor, str, Scene]],
) -> tuple[Tensor, list[str], list[Scene]]:
    """DataLoader collate_fn: images [B, 3, H, W], captions list, scenes list."""
    images, texts, scenes = zip(*batch)
    return torch.stack(images), list(texts), list(scenes)
