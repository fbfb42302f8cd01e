"""Stable Diffusion's attention block for U-Nets: a "spatial transformer" (Rombach et al. 2022,
appendix E.2; the `SpatialTransformer` of latent diffusion).

The feature map is group-normalised, projected to tokens, passed through transformer blocks
(self-attention, cross-attention to text tokens, a GEGLU feed-forward, each pre-LayerNorm and
residual) and projected back, with a residual around the whole block:

    x -> GroupNorm -> proj_in -> [block] x depth -> proj_out -> + x

Stable Diffusion 1.x projects with 1x1 convolutions and 2.x with linear maps; both are the same
per-pixel linear map, so `proj_in` / `proj_out` here are linear maps over the token axis and a
1x1 convolution's weight is its (out, in) matrix.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from diffuse.nets.layers import CrossAttention, GroupNorm, Linear, SelfAttention

__all__ = ["GEGLUFeedForward", "SpatialTransformer", "TransformerBlock"]


class GEGLUFeedForward(nn.Module):
    """Feed-forward with a GELU-gated linear unit (Shazeer 2020, "GLU Variants", eq. 6):
    out(h * gelu(g)) with [h, g] = proj(x), as in Stable Diffusion's transformer blocks.

    Args:
        dim: token width.
        mult: hidden width multiplier (4 in Stable Diffusion).
    """

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.proj = Linear(dim, 2 * mult * dim)
        self.out = Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim)."""
        hidden, gate = self.proj(x).chunk(2, dim=-1)  # each (B, N, mult * dim)
        return self.out(hidden * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-LN self-attention, cross-attention and GEGLU feed-forward, each residual.

    Args:
        dim: token width.
        context_dim: width of the text tokens.
        heads: attention heads.
    """

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, context_dim, heads, qkv_bias=False)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim)

    def forward(self, x: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        """Args: x (B, N, dim); context (B, L, context_dim) or None (then the cross-attention
        attends to the block's own tokens, as Stable Diffusion does); mask (B, L) or None.
        Returns (B, N, dim)."""
        x = x + self.attn(self.norm1(x))
        h = self.norm2(x)
        x = x + self.cross(h, h if context is None else context, None if context is None else mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm, projection to tokens, `depth` transformer blocks, projection back, residual.

    Args:
        channels: feature width (also the token width, as in Stable Diffusion).
        heads: attention heads.
        context_dim: width of the text tokens.
        depth: transformer blocks.
        num_groups: GroupNorm groups.
    """

    def __init__(
        self, channels: int, heads: int, context_dim: int, depth: int, num_groups: int
    ) -> None:
        super().__init__()
        self.norm = GroupNorm(num_groups, channels, eps=1e-6)
        self.proj_in = Linear(channels, channels)
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, context_dim, heads) for _ in range(depth)
        )
        self.proj_out = Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        """Args: x (B, C, H, W); context (B, L, context_dim) or None; mask (B, L) or None.
        Returns (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, H*W, C)
        h = self.proj_in(h)
        for block in self.blocks:
            h = block(h, context, mask)
        h = self.proj_out(h).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)
        return h + x
