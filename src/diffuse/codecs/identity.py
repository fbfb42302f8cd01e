"""The identity codec: pixel-space models decode through it, so pipelines never branch on
"latent or not"."""

from __future__ import annotations

from torch import Tensor, nn


class IdentityCodec(nn.Module):
    """encode/decode are the identity; the latent shape is the image shape.

    Args:
        channels: image channels.
    """

    downsample: int = 1

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    @property
    def image_channels(self) -> int:
        """Channels of the images (the same as of the "latents")."""
        return self.channels

    def encode(self, images: Tensor) -> Tensor:
        """Images [B, C, H, W] in [-1, 1] -> the same tensor."""
        return images

    def decode(self, latents: Tensor) -> Tensor:
        """Latents [B, C, H, W] -> images in [-1, 1] (the same tensor)."""
        return latents

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, H, W) of the latent of a square image of side `image_size`."""
        return (self.channels, image_size, image_size)
