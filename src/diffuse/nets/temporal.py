"""Layers that mix information along the frame axis of a clip, for factorised space-time
networks (Ho et al. 2022, "Video Diffusion Models"; Blattmann et al. 2023, "Align your
Latents"): the spatial blocks of an image network run on every frame as a batch of images,
and after each of them a temporal block lets every pixel look along its own time line.

Every residual branch here ends in a zero-initialised projection, so a freshly inflated
network computes exactly its image network frame by frame; training then turns the branches on.

Frames travel through the spatial blocks folded into the batch: a clip batch (B, C, T, H, W)
becomes (B * T, C, H, W) with the frames of one clip adjacent (`fold_frames`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffuse.nets.layers import Linear, SelfAttention, silu, sincos_1d, sinusoidal_embedding

__all__ = [
    "FrameEmbedding",
    "TemporalBlock",
    "check_clip",
    "fold_frames",
    "unfold_frames",
]


def check_clip(net: str, x: Tensor, channels: int, max_frames: int) -> int:
    """Check that x is a clip batch (B, channels, T, H, W) with 1 <= T <= max_frames.

    Returns:
        T, the number of frames.
    Raises:
        ValueError: naming the shape and the limit.
    """
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(
            f"{net} expects a clip batch of shape (B, {channels}, T, H, W), got {tuple(x.shape)}"
        )
    frames = x.shape[2]
    if not 1 <= frames <= max_frames:
        raise ValueError(f"{net} takes 1 to {max_frames} frames (max_frames), got T={frames}")
    return frames


def fold_frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B * T, C, H, W), the frames of a clip adjacent."""
    B, C, T, H, W = x.shape
    return x.transpose(1, 2).reshape(B * T, C, H, W)


def unfold_frames(x: Tensor, frames: int) -> Tensor:
    """(B * T, C, H, W) -> (B, C, T, H, W); the inverse of `fold_frames`."""
    BT, C, H, W = x.shape
    return x.reshape(BT // frames, frames, C, H, W).transpose(1, 2)


class FrameEmbedding(nn.Module):
    """Per-frame conditioning added to the noise-level embedding: sinusoidal features of the
    frame index and of the frame rate, each through a linear map that starts at zero.

    Args:
        freq_dim: size of the sinusoidal features.
        dim: embedding width (the network's time-embedding width).
    """

    def __init__(self, freq_dim: int, dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.index = Linear(freq_dim, dim)
        self.rate = Linear(freq_dim, dim)

    def forward(self, batch: int, frames: int, fps: Tensor | None, device: torch.device) -> Tensor:
        """Embedding of every frame of `batch` clips.

        Args:
            batch, frames: clip batch size and length.
            fps: (batch,) frames per second, or None (no rate information: zero).
        Returns:
            (batch * frames, dim), frames of a clip adjacent.
        """
        index = torch.arange(frames, device=device, dtype=torch.float32)
        emb = self.index(sinusoidal_embedding(index, self.freq_dim).to(self.index.weight.dtype))
        emb = emb.repeat(batch, 1)  # (B * T, dim)
        if fps is not None:
            rate = self.rate(sinusoidal_embedding(fps, self.freq_dim).to(self.rate.weight.dtype))
            emb = emb + rate.repeat_interleave(frames, dim=0)
        return emb


class TemporalBlock(nn.Module):
    """A 1-D convolution along the frame axis, then self-attention over the frames, at every
    pixel of a feature map; each a pre-norm residual branch whose output map starts at zero.

    Attention sees the frame index through fixed sine-cosine positions added to its input; the
    convolution sees it through its window. Both read the network's per-frame embedding (noise
    level, pooled text, frame index) as a shift of their normalised input, so what the prompt
    says about motion reaches the temporal layers directly.

    Args:
        channels: feature width.
        heads: attention heads.
        kernel: odd window of the temporal convolution.
        emb_dim: width of the embedding (0: none).
    """

    def __init__(self, channels: int, heads: int, kernel: int = 3, emb_dim: int = 0) -> None:
        super().__init__()
        self.emb = Linear(emb_dim, channels) if emb_dim else None
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"temporal convolution needs an odd kernel >= 1, got {kernel}")
        self.norm_conv = nn.LayerNorm(channels, eps=1e-6)
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm_attn = nn.LayerNorm(channels, eps=1e-6)
        self.attn = SelfAttention(channels, heads)

    def forward(self, x: Tensor, frames: int, emb: Tensor | None = None) -> Tensor:
        """Args: x (B * T, C, H, W), frames T (one frame: returned as is), emb (B * T,
        emb_dim) after SiLU or None. Returns x's shape."""
        if frames == 1:
            return x  # nothing to mix: a still image goes through the image network only
        BT, C, H, W = x.shape
        B = BT // frames
        # (B*T, C, H, W) -> (B, T, H*W, C) -> (B*H*W, T, C): one time line per pixel.
        t = x.permute(0, 2, 3, 1).reshape(B, frames, H * W, C).transpose(1, 2)
        t = t.reshape(B * H * W, frames, C)
        shift = sincos_1d(frames, C, device=x.device).to(t.dtype)  # (T, C) frame positions
        h = self.norm_conv(t)
        if self.emb is not None and emb is not None:
            e = self.emb(emb).reshape(B, 1, frames, C).expand(B, H * W, frames, C)
            e = e.reshape(B * H * W, frames, C)  # every pixel of a frame: its frame's shift
            h = h + e
            shift = shift + e
        t = t + self.conv(silu(h).transpose(1, 2)).transpose(1, 2)  # (B*H*W, T, C)
        t = t + self.attn(self.norm_attn(t) + shift)
        # (B*H*W, T, C) -> (B, H*W, T, C) -> (B, T, H, W, C) -> (B*T, C, H, W) channels_last.
        out = t.reshape(B, H * W, frames, C).transpose(1, 2).reshape(BT, H, W, C)
        return out.permute(0, 3, 1, 2)
