"""The two seams between data and the denoiser, as protocols: a `Codec` (pixels <-> the space the
network works in) and a `PromptEncoder` (prompts -> conditioning).

Pipelines, the model folder and the trainer are written against these, so a new codec (another
autoencoder, a video codec) or another text encoder adapter plugs in without touching them.
`IdentityCodec` and `VAE` are the codecs shipped today; `TextEncoder` the prompt encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from diffuse.codecs.text_encoder import TextEncoding

__all__ = ["Codec", "PromptEncoder"]


@runtime_checkable
class Codec(Protocol):
    """Maps images to the tensors a denoiser makes, and back.

    Attributes:
        channels: C of the latents (the image channels for the identity codec).
        image_channels: C_img of the images.
        downsample: spatial factor f: an H x W image has H/f x W/f latents.
    """

    channels: int
    downsample: int

    @property
    def image_channels(self) -> int:
        """C_img of the images (3 RGB, 1 grey)."""
        ...

    def encode(self, images: Tensor) -> Tensor:
        """Images [B, C_img, H, W] in [-1, 1] -> latents [B, C, H/f, W/f]."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Latents [B, C, h, w] -> images [B, C_img, h*f, w*f], about [-1, 1]."""
        ...

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, H/f, W/f) of the latent of a square image of side `image_size`."""
        ...

    def to(self, device: str | torch.device) -> Codec:
        """Move the codec's weights (if any) to `device`; returns the codec."""
        ...

    def eval(self) -> Codec:
        """Inference mode (no dropout, frozen statistics); returns the codec."""
        ...

    def requires_grad_(self, requires_grad: bool = True) -> Codec:
        """Freeze or unfreeze the codec's weights; returns the codec."""
        ...


@runtime_checkable
class PromptEncoder(Protocol):
    """A frozen text encoder adapter: prompts -> the networks' text conditioning.

    Attributes:
        dim: D, the width of the token embeddings (`context`).
        pooled_dim: P, the width of the sentence embedding (`pooled`).
    """

    @property
    def dim(self) -> int:
        """D, the width of `context`."""
        ...

    @property
    def pooled_dim(self) -> int:
        """P, the width of `pooled`."""
        ...

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        """Encode B prompts ("" = unconditional): context [B, L, D], mask [B, L], pooled
        [B, P]."""
        ...

    def to(self, device: str | torch.device) -> PromptEncoder:
        """Move the encoder to `device`; returns the encoder."""
        ...
