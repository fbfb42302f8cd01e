"""Control images computed from a picture: an edge map and a colour-free layout map.

Both take uint8 RGB pixels [H, W, 3] and return float32 [C, H, W] in {0, 1}:

- "edges" (1 channel): the largest Sobel gradient magnitude over the three colour channels
  above a threshold, i.e. the outlines of the objects (Shapes backgrounds are smooth gradients,
  far below it). Per channel, not of the luminance: a blue or purple object on a dark
  background differs from it by >= 88/255 in one channel but can have almost its luminance.
- "layout" (4 channels, one per shape class): pixels of the objects, found colour-free as those
  with a channel far above the background (every Shapes object colour has a channel >= 180,
  every background <= 92), each assigned to the nearest object the Shapes evaluator detects and
  put in the channel of that object's shape.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from diffuse.shapes.evaluator import detect_objects
from diffuse.shapes.scenes import SHAPES

__all__ = ["CONTROL_MAPS", "control_map", "edge_map", "layout_map"]

EDGE_THRESHOLD = 0.25  # of a channel's Sobel magnitude in [0, 1]
FOREGROUND = 140  # a pixel with a channel above this is an object's (backgrounds stay <= 92)


def _check(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(
            f"a control map needs uint8 RGB pixels [H, W, 3], got {pixels.dtype} "
            f"{tuple(pixels.shape)}"
        )
    return pixels


def edge_map(pixels: np.ndarray) -> Tensor:
    """Binary edges [1, H, W] (float32) of uint8 RGB pixels [H, W, 3]."""
    pixels = _check(pixels)
    channels = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[:, None]
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    kernels = torch.stack([sobel, sobel.T])[:, None]  # [2, 1, 3, 3]: d/dx, d/dy
    grad = F.conv2d(F.pad(channels, (1, 1, 1, 1), mode="replicate"), kernels)  # [3, 2, H, W]
    magnitude = grad.square().sum(1).sqrt().amax(0, keepdim=True)  # [1, H, W]
    return (magnitude > EDGE_THRESHOLD).float()


def layout_map(pixels: np.ndarray) -> Tensor:
    """Object masks by shape class [4, H, W] (float32; channel order `SHAPES`)."""
    pixels = _check(pixels)
    h, w, _ = pixels.shape
    out = torch.zeros(len(SHAPES), h, w)
    foreground = pixels.max(axis=-1) > FOREGROUND
    detections = detect_objects(pixels[None])[0]
    if not detections or not foreground.any():
        return out
    ys, xs = np.nonzero(foreground)
    centres = np.array([(d.cx * w, d.cy * h) for d in detections])  # [K, 2]
    d2 = (xs[:, None] + 0.5 - centres[None, :, 0]) ** 2 + (
        ys[:, None] + 0.5 - centres[None, :, 1]
    ) ** 2
    nearest = d2.argmin(axis=1)
    for k, det in enumerate(detections):
        pick = nearest == k
        out[SHAPES.index(det.shape), ys[pick], xs[pick]] = 1.0
    return out


CONTROL_MAPS = {"edges": edge_map, "layout": layout_map}
"""Control kind -> the function computing its map (channels: nets.controlnet.CONTROL_KINDS)."""


def control_map(kind: str, pixels: np.ndarray) -> Tensor:
    """The control map of `kind` for uint8 RGB pixels; ValueError naming an unknown kind."""
    if kind not in CONTROL_MAPS:
        raise ValueError(f"unknown control kind {kind!r}; valid: {', '.join(sorted(CONTROL_MAPS))}")
    return CONTROL_MAPS[kind](pixels)
