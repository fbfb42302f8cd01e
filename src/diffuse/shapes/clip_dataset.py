"""`MovingShapesDataset`: rendered Moving Shapes clips with captions, deterministic by index."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffuse.shapes.clip_captions import clip_caption, clip_paraphrase
from diffuse.shapes.motion import CLIP_SPLITS, ClipScene, render_clip, sample_clip_scene

__all__ = ["CLIP_CAPTIONERS", "MovingShapesDataset", "collate_clips", "to_float_clip"]

# Caption kinds -> the function writing them (clip, seed, index) -> str.
CLIP_CAPTIONERS = {"train": clip_caption, "paraphrase": clip_paraphrase}


def to_float_clip(frames: np.ndarray) -> Tensor:
    """uint8 [T, H, W, 3] -> float32 [3, T, H, W] in [-1, 1] (x / 127.5 - 1, exact round trip)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


class MovingShapesDataset(torch.utils.data.Dataset):
    """`count` Moving Shapes clips of `frames` frames at `resolution` px, one caption each.

    `dataset[i]` is `(clip, caption)`: clip float32 [3, T, H, W] in [-1, 1] (channels first,
    then time, the layout video networks and codecs take), the caption string. `clip_scene(i)`
    gives the structured `ClipScene` and `frames_uint8(i)` the uint8 [T, H, W, 3] render.
    Everything is a pure function of (seed, split, index, max_objects): workers, restarts and
    machines agree without shared state.

    Args:
        count: number of items.
        frames: frames per clip (>= 1; 8 to 16 is the designed range).
        resolution: frame side in pixels (32 or 64; any value >= 16 renders).
        split: "train" or "heldout" (clips with an unseen (colour shape, direction)).
        seed: selects an independent stream of clips.
        captions: "train" (training vocabulary) or "paraphrase" (disjoint vocabulary).
        max_objects: at most this many objects per clip (1 to 3).
    """

    def __init__(
        self,
        count: int,
        frames: int = 16,
        resolution: int = 32,
        split: str = "train",
        seed: int = 0,
        captions: str = "train",
        max_objects: int = 3,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if resolution < 16:
            raise ValueError(f"resolution must be >= 16, got {resolution}")
        if split not in CLIP_SPLITS:
            raise ValueError(f"split must be one of {', '.join(CLIP_SPLITS)}, got {split!r}")
        if captions not in CLIP_CAPTIONERS:
            names = ", ".join(CLIP_CAPTIONERS)
            raise ValueError(f"captions must be one of {names}, got {captions!r}")
        if not 1 <= max_objects <= 3:
            raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects}")
        self.count, self.frames, self.resolution = count, frames, resolution
        self.split, self.seed, self.captions, self.max_objects = split, seed, captions, max_objects

    def __len__(self) -> int:
        return self.count

    def _index(self, index: int) -> int:
        if not -self.count <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} clips")
        return index % self.count

    def clip_scene(self, index: int) -> ClipScene:
        """The structured clip of item `index`."""
        return sample_clip_scene(self.seed, self._index(index), self.split, self.max_objects)

    def caption(self, index: int) -> str:
        """The caption of item `index`."""
        index = self._index(index)
        return CLIP_CAPTIONERS[self.captions](self.clip_scene(index), self.seed, index)

    def frames_uint8(self, index: int) -> np.ndarray:
        """The render of item `index`, uint8 [T, H, W, 3]."""
        return render_clip(self.clip_scene(index), self.frames, self.resolution)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        index = self._index(index)
        clip = self.clip_scene(index)
        text = CLIP_CAPTIONERS[self.captions](clip, self.seed, index)
        return to_float_clip(render_clip(clip, self.frames, self.resolution)), text


def collate_clips(batch: list[tuple[Tensor, str]]) -> tuple[Tensor, list[str]]:
    """DataLoader collate_fn: clips [B, 3, T, H, W] and the captions list."""
    clips, texts = zip(*batch)
    return torch.stack(clips), list(texts)
