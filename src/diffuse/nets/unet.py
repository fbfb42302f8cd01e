"""U-Net denoiser in the DDPM / ADM / Stable Diffusion family.

The architecture follows DDPM (Ho et al. 2020, appendix B) and its improved form in ADM
(Dhariwal & Nichol 2021): residual blocks with GroupNorm and SiLU, self-attention at chosen
levels, a skip connection from every encoder stage to the decoder, the noise level embedded by
sinusoidal features and an MLP, and (optionally) scale-shift conditioning of the second norm.
Text conditioning adds Stable Diffusion's cross-attention to token embeddings (Rombach et al.
2022) and an SDXL-style pooled embedding added to the time embedding.

    cfg = unet_preset("unet-cifar")
    net = UNet(cfg)
    out = net(x, c_noise)                   # x: (B, 3, 32, 32), c_noise: (B,)

Speed notes: activations run in channels_last memory (oneDNN's native conv layout on CPU, tensor
cores on GPU), the token view of an activation for attention is then free, in-place updates are
used where autograd allows, nearest-upsample + conv runs as one transposed convolution, and on
CPU the large 3x3 convolutions use Winograd's F(4x4, 3x3) (`nets.winograd`), since oneDNN's
direct convolution is already at the core's FMA peak and only fewer multiplications help.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuse.nets.inputs import check_inputs
from diffuse.nets.layers import (
    CrossAttention,
    GroupNorm,
    Linear,
    NoiseEmbedding,
    SelfAttention,
    conv3x3_upsample2x,
    linear,
    silu,
    upsample_kernel,
    use_reference_kernels,
    zero_,
)
from diffuse.nets.spatial_transformer import SpatialTransformer
from diffuse.nets.temporal import (
    FrameEmbedding,
    TemporalBlock,
    check_clip,
    fold_frames,
    unfold_frames,
)
from diffuse.nets.winograd import Conv3x3

__all__ = ["PRESETS", "UNet", "UNetConfig", "UNetControl", "unet_preset"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net. Zero means "absent" for the optional conditioning sizes.

    Attributes:
        in_channels: channels of the image being denoised.
        out_channels: channels of the output (usually equal to in_channels).
        extra_in_channels: further input channels concatenated to the image by the caller
            (inpainting mask and masked image, control signals); the input then has
            in_channels + extra_in_channels channels.
        image_size: training resolution (informational; any size divisible by
            2 ** (levels - 1) works).
        base_channels: channels at the first level.
        channel_mult: per-level channel multipliers; one level per entry.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_levels: level indices (0 = full resolution) with self-attention.
        mid_attention: self-attention in the middle block.
        num_heads: attention heads (used when head_channels is 0).
        head_channels: channels per head; when > 0 the head count is width // head_channels.
        dropout: dropout before the second convolution of each residual block.
        scale_shift: condition the second norm with (1 + scale) * norm(h) + shift (ADM)
            instead of adding the embedding before it (DDPM).
        num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
        num_classes: class-conditional with this many classes (0: not); index num_classes is
            the null class used for classifier-free guidance.
        context_dim: width of text token embeddings for cross-attention (0: no text).
        pooled_dim: width of a pooled text embedding added to the time embedding (0: none).
        noise_scale: multiplier of c_noise before the sinusoidal features.
        max_period: longest period of the sinusoidal features.
        freq_shift, sin_first: variants of the sinusoidal features (see
            `layers.sinusoidal_embedding`; DDPM's original network uses 1 and True).
        transformer_depth: > 0 makes every attention block Stable Diffusion's spatial
            transformer with this many transformer blocks (`nets.spatial_transformer`; needs
            context_dim); 0 keeps the DDPM/ADM attention block.
        temporal: a video network: the input is a clip batch (B, C, T, H, W), every spatial
            stage is followed by a temporal block (`nets.temporal.TemporalBlock`) and frame
            index / frame rate embeddings are added; all start at zero, so the network is its
            image network applied frame by frame until trained.
        max_frames: the longest clip a temporal network takes.
        temporal_kernel: window of the temporal convolutions.
        first_frame: image-to-video: the network also reads a clean first-frame latent and a
            frame mask (in_channels + 1 more input channels, zero-initialised) through its
            `first_frame` argument; without it the mask is all zero (text-to-video).
    """

    in_channels: int = 3
    out_channels: int = 3
    extra_in_channels: int = 0
    image_size: int = 32
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1,)
    mid_attention: bool = True
    num_heads: int = 1
    head_channels: int = 0
    dropout: float = 0.1
    scale_shift: bool = False
    num_groups: int = 32
    norm_eps: float = 1e-6
    num_classes: int = 0
    context_dim: int = 0
    pooled_dim: int = 0
    noise_scale: float = 1.0
    max_period: float = 10000.0
    freq_shift: float = 0.0
    sin_first: bool = False
    transformer_depth: int = 0
    temporal: bool = False
    max_frames: int = 16
    temporal_kernel: int = 3
    first_frame: bool = False

    def __post_init__(self) -> None:
        # TOML and JSON give lists; keep the dataclass hashable and comparable.
        for name in ("channel_mult", "attention_levels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("in_channels", "out_channels", "image_size", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("extra_in_channels", "num_classes", "context_dim", "pooled_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"UNetConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.num_res_blocks < 1:
            raise ValueError(f"UNetConfig.num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.transformer_depth < 0 or (self.transformer_depth and not self.context_dim):
            raise ValueError(
                f"UNetConfig.transformer_depth must be >= 0 and needs context_dim > 0, got "
                f"transformer_depth={self.transformer_depth}, context_dim={self.context_dim}"
            )
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(
                f"UNetConfig.channel_mult must be positive integers, got {self.channel_mult}"
            )
        levels = len(self.channel_mult)
        bad = [lv for lv in self.attention_levels if not 0 <= lv < levels]
        if bad:
            raise ValueError(
                f"UNetConfig.attention_levels {self.attention_levels} has levels {bad} outside "
                f"0..{levels - 1} (channel_mult={self.channel_mult})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.num_heads < 1 or self.head_channels < 0:
            raise ValueError(
                f"UNetConfig needs num_heads >= 1 and head_channels >= 0, got "
                f"num_heads={self.num_heads}, head_channels={self.head_channels}"
            )
        factor = 2 ** (levels - 1)
        if self.image_size % factor:
            raise ValueError(
                f"UNetConfig.image_size={self.image_size} is not divisible by {factor}, the "
                f"downsampling factor of {levels} levels"
            )
        for c in sorted(set(self.norm_channels())):
            if c % self.num_groups:
                raise ValueError(
                    f"UNetConfig.num_groups={self.num_groups} does not divide {c} channels "
                    f"(base_channels={self.base_channels}, channel_mult={self.channel_mult})"
                )
        for c in sorted(set(self.attention_channels())):
            self.heads_for(c)  # raises on a mismatch
        if self.temporal:
            if self.max_frames < 1:
                raise ValueError(f"UNetConfig.max_frames must be >= 1, got {self.max_frames}")
            if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
                raise ValueError(
                    f"UNetConfig.temporal_kernel must be odd and >= 1, got {self.temporal_kernel}"
                )
        if self.first_frame and not self.temporal:
            raise ValueError("UNetConfig.first_frame needs temporal = true (a video network)")

    @property
    def first_frame_channels(self) -> int:
        """Input channels of the first-frame condition: its latent and the frame mask."""
        return self.in_channels + 1 if self.first_frame else 0

    @property
    def levels(self) -> int:
        """Number of resolution levels."""
        return len(self.channel_mult)

    def heads_for(self, channels: int) -> int:
        """Attention heads at a block of `channels` width (raises if they do not divide it)."""
        if self.head_channels:
            if channels % self.head_channels:
                raise ValueError(
                    f"UNetConfig.head_channels={self.head_channels} does not divide the "
                    f"attention width {channels}"
                )
            return channels // self.head_channels
        if channels % self.num_heads:
            raise ValueError(
                f"UNetConfig.num_heads={self.num_heads} does not divide the attention width "
                f"{channels}"
            )
        return self.num_heads

    def temporal_heads(self, channels: int) -> int:
        """Heads of a temporal attention of `channels` width: as `heads_for` where the head
        size divides it (the temporal blocks sit also at levels without spatial attention),
        else one head."""
        try:
            return self.heads_for(channels)
        except ValueError:
            return 1

    def attention_channels(self) -> list[int]:
        """Widths of all attention blocks."""
        chans = [self.base_channels * self.channel_mult[lv] for lv in self.attention_levels]
        if self.mid_attention:
            chans.append(self.base_channels * self.channel_mult[-1])
        return chans

    def skip_channels(self) -> list[int]:
        """Channels of each encoder skip connection, in the order they are produced."""
        ch = [self.base_channels]
        for lv, mult in enumerate(self.channel_mult):
            ch += [self.base_channels * mult] * self.num_res_blocks
            if lv != self.levels - 1:
                ch.append(self.base_channels * mult)
        return ch

    def norm_channels(self) -> list[int]:
        """Channel counts of every GroupNorm (decoder inputs include the concatenated skip)."""
        out, skips = [], self.skip_channels()
        ch = self.base_channels
        for mult in self.channel_mult:
            out += [ch, self.base_channels * mult]
            ch = self.base_channels * mult
        for mult in reversed(self.channel_mult):
            for _ in range(self.num_res_blocks + 1):
                out += [ch + skips.pop(), self.base_channels * mult]
                ch = self.base_channels * mult
        return out + self.attention_channels()


PRESETS: dict[str, UNetConfig] = {
    # For tests: two levels, about 200k parameters.
    "unet-tiny": UNetConfig(
        base_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_channels=16,
        num_groups=8,
        dropout=0.0,
        scale_shift=True,
        image_size=16,
    ),
    # Small pixel-space model for 28-32 px training on a CPU: 3.9M parameters, 1.6 GFLOPs.
    "unet-s": UNetConfig(
        base_channels=48,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_levels=(2,),
        head_channels=32,
        num_groups=16,
        dropout=0.1,
        scale_shift=True,
        image_size=32,
    ),
    # DDPM's CIFAR-10 network (Ho et al. 2020): 35.7M parameters, same as google/ddpm-cifar10-32.
    "unet-cifar": UNetConfig(
        base_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_levels=(1,),
        num_heads=1,
        dropout=0.1,
        scale_shift=False,
        image_size=32,
    ),
    # ADM's ImageNet 64x64 layout (Dhariwal & Nichol 2021): 192 channels x (1, 2, 3, 4), three
    # blocks per level, attention at 32/16/8 px with 64-channel heads: 276M parameters (ADM's
    # 296M adds residual up/down-sampling blocks and a learned-variance output).
    "unet-b": UNetConfig(
        base_channels=192,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=3,
        attention_levels=(1, 2, 3),
        head_channels=64,
        dropout=0.1,
        scale_shift=True,
        image_size=64,
    ),
}


def unet_preset(name: str, **overrides: object) -> UNetConfig:
    """A named U-Net config, optionally with fields replaced.

    Raises:
        ValueError: unknown name (listing the known ones) or invalid overrides.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class UNetControl:
    """ControlNet residuals for a U-Net (Zhang et al. 2023): one tensor per encoder skip
    connection, added to it before the decoder reads it, and one added to the middle block's
    output. Shapes follow `UNetConfig.skip_channels()` at the matching resolutions.

    Attributes:
        skips: tuple of (B, C_i, H_i, W_i), len == len(config.skip_channels()).
        mid: (B, C_mid, H_min, W_min) or None.
    """

    skips: tuple[Tensor, ...]
    mid: Tensor | None = None


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the noise embedding injected in between (DDPM/ADM).

    Args:
        cin, cout: channels in and out.
        emb_dim: width of the (already SiLU-activated) embedding.
        cfg: the U-Net config (groups, eps, dropout, scale_shift).
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.scale_shift, self.dropout = cfg.scale_shift, cfg.dropout
        self.norm1 = GroupNorm(cfg.num_groups, cin, eps=cfg.norm_eps)
        self.conv1 = Conv3x3(cin, cout)
        self.emb = Linear(emb_dim, cout * (2 if cfg.scale_shift else 1))
        self.norm2 = GroupNorm(cfg.num_groups, cout, eps=cfg.norm_eps)
        self.conv2 = Conv3x3(cout, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Args: x (B, cin, H, W); emb (B, emb_dim) after SiLU. Returns (B, cout, H, W)."""
        h = self.conv1(silu(self.norm1(x)))
        e = self.emb(emb)[:, :, None, None]  # (B, cout or 2 cout, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        else:
            # In place: the convolution's backward needs its input, not its output.
            h = self.norm2(h.add_(e))
        h = silu(h)
        if self.dropout and self.training:
            h = F.dropout(h, self.dropout, training=True, inplace=True)  # SiLU saved its input
        h = self.conv2(h)
        if self.skip is None:
            return h.add_(x)
        # The 1x1 skip convolution is a linear map of each pixel's channels (oneDNN route).
        w = self.skip.weight
        skip = linear(x.permute(0, 2, 3, 1), w.view(w.shape[0], -1), self.skip.bias)
        return h.add_(skip.permute(0, 3, 1, 2))


class AttentionBlock(nn.Module):
    """Self-attention over the pixels of a feature map, then optional cross-attention to text.

    Args:
        channels: feature width.
        heads: attention heads.
        cfg: the U-Net config (groups, eps, context_dim).
    """

    def __init__(self, channels: int, heads: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm = GroupNorm(cfg.num_groups, channels, eps=cfg.norm_eps)
        self.attn = SelfAttention(channels, heads)
        if cfg.context_dim:
            self.norm_cross = nn.LayerNorm(channels, eps=1e-6)
            self.cross = CrossAttention(channels, cfg.context_dim, heads)
        else:
            self.norm_cross = self.cross = None

    def forward(self, x: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        """Args: x (B, C, H, W); context (B, L, context_dim) or None; mask (B, L) or None.
        Returns (B, C, H, W)."""
        B, C, H, W = x.shape
        # (B, C, H, W) -> (B, H*W, C); a view when x is channels_last.
        tokens = x.permute(0, 2, 3, 1).reshape(B, H * W, C)
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)
        out = self.attn(h).add_(tokens)  # proj's backward does not need its output
        if self.cross is not None and context is not None:
            out = out + self.cross(self.norm_cross(out), context, mask)
        return out.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W) channels_last view


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (ADM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (DDPM), run as one
    transposed convolution with a folded kernel (see `layers.conv3x3_upsample2x`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self._kernel: tuple[tuple, Tensor] | None = None  # (weight key, folded kernel)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        w = self.conv.weight
        if use_reference_kernels():
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if (torch.is_grad_enabled() and w.requires_grad) or torch.compiler.is_compiling():
            return conv3x3_upsample2x(x, w, self.conv.bias)
        # Sampling: fold the kernel once, until the weight changes (its version counter moves
        # on every in-place update).
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._kernel is None or self._kernel[0] != key:
            self._kernel = (key, upsample_kernel(w.detach()))
        return conv3x3_upsample2x(x, w, self.conv.bias, kernel=self._kernel[1])


class _Stage(nn.Module):
    """A residual block with an optional attention block after it, and in a video network a
    temporal block after those (frames folded into the batch, `nets.temporal`)."""

    def __init__(
        self,
        res: ResBlock,
        attn: AttentionBlock | SpatialTransformer | None,
        temporal: TemporalBlock | None = None,
    ) -> None:
        super().__init__()
        self.res, self.attn = res, attn
        self.temporal = temporal  # None in image networks: their state dicts keep their keys

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        context: Tensor | None,
        mask: Tensor | None,
        frames: int = 1,
    ) -> Tensor:
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x, context, mask)
        return x if self.temporal is None else self.temporal(x, frames, emb)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class EncoderPass:
    """The conditioning embedding and the encoder half of a U-Net, shared by `UNet` and the
    ControlNet's trainable copy (`nets.controlnet`): both hold the same modules (time_embed,
    class_embed, pooled_embed, down, downsample, mid1, mid_attn, mid2) for `unet_config`."""

    unet_config: UNetConfig

    def embedding(
        self,
        c_noise: Tensor,
        class_labels: Tensor | None,
        pooled: Tensor | None,
        extra: Tensor | None = None,
    ) -> Tensor:
        """The per-sample embedding every block reads, SiLU already applied (`extra`, e.g.
        the frame embedding of a video network, is added before it)."""
        emb = self.time_embed(c_noise)  # (B, 4 base)
        if extra is not None:
            emb = emb + extra
        if self.class_embed is not None:
            if class_labels is None:
                null = self.unet_config.num_classes
                class_labels = torch.full_like(c_noise, null, dtype=torch.long)
            emb = emb + self.class_embed(class_labels)
        if self.pooled_embed is not None and pooled is not None:
            emb = emb + self.pooled_embed(pooled)
        return F.silu(emb)  # every block applies SiLU first; do it once here

    def encoder(
        self,
        h: Tensor,
        emb: Tensor,
        context: Tensor | None,
        context_mask: Tensor | None,
        frames: int = 1,
    ) -> tuple[Tensor, list[Tensor]]:
        """The down path from the first feature map `h`: (its output, the skip features).
        `frames`: clip length when frames are folded into the batch (video networks)."""
        skips = [h]
        per_level = self.unet_config.num_res_blocks
        for i, stage in enumerate(self.down):
            h = stage(h, emb, context, context_mask, frames)
            skips.append(h)
            if i % per_level == per_level - 1 and i // per_level < len(self.downsample):
                h = self.downsample[i // per_level](h)
                skips.append(h)
        return h, skips

    def middle(
        self,
        h: Tensor,
        emb: Tensor,
        context: Tensor | None,
        context_mask: Tensor | None,
        frames: int = 1,
    ) -> Tensor:
        """The bottleneck: residual block, optional attention, (temporal block,) residual
        block."""
        h = self.mid1(h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h, context, context_mask)
        if getattr(self, "mid_temporal", None) is not None:
            h = self.mid_temporal(h, frames, emb)
        return self.mid2(h, emb)


class UNet(EncoderPass, nn.Module):
    """The U-Net denoiser network.

    Args:
        config: the architecture.

    Attributes:
        channels_last: run activations in channels_last memory (default True; faster for
            convolutions on CPU with oneDNN and on GPU).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.unet_config = config
        self.channels_last = True
        base = cfg.base_channels
        emb_dim = 4 * base
        self.time_embed = NoiseEmbedding(
            base,
            emb_dim,
            max_period=cfg.max_period,
            scale=cfg.noise_scale,
            freq_shift=cfg.freq_shift,
            sin_first=cfg.sin_first,
        )
        # Index num_classes is the null class for classifier-free guidance.
        self.class_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.pooled_embed = Linear(cfg.pooled_dim, emb_dim) if cfg.pooled_dim else None

        self.conv_in = Conv3x3(
            cfg.in_channels + cfg.extra_in_channels + cfg.first_frame_channels, base
        )
        skips = cfg.skip_channels()
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = base
        for lv, mult in enumerate(cfg.channel_mult):
            cout = base * mult
            for _ in range(cfg.num_res_blocks):
                self.down.append(self._stage(ch, cout, lv, emb_dim))
                ch = cout
            if lv != cfg.levels - 1:
                self.downsample.append(Downsample(ch))
        self.mid1 = ResBlock(ch, ch, emb_dim, cfg)
        self.mid_attn = self._attention(ch) if cfg.mid_attention else None
        if cfg.temporal:  # video networks only: image state dicts keep their keys
            self.mid_temporal = self._temporal(ch)
            self.frame_embed = FrameEmbedding(base, emb_dim)
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lv in reversed(range(cfg.levels)):
            cout = base * cfg.channel_mult[lv]
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(self._stage(ch + skips.pop(), cout, lv, emb_dim))
                ch = cout
            if lv != 0:
                self.upsample.append(Upsample(ch))
        self.norm_out = GroupNorm(cfg.num_groups, ch, eps=cfg.norm_eps)
        self.conv_out = Conv3x3(ch, cfg.out_channels)
        self.initialize_weights()

    def _attention(self, channels: int) -> AttentionBlock | SpatialTransformer:
        cfg = self.config
        heads = cfg.heads_for(channels)
        if cfg.transformer_depth:
            return SpatialTransformer(
                channels, heads, cfg.context_dim, cfg.transformer_depth, cfg.num_groups
            )
        return AttentionBlock(channels, heads, cfg)

    def _temporal(self, channels: int) -> TemporalBlock | None:
        cfg = self.config
        if not cfg.temporal:
            return None
        emb_dim = 4 * cfg.base_channels
        return TemporalBlock(channels, cfg.temporal_heads(channels), cfg.temporal_kernel, emb_dim)

    def _stage(self, cin: int, cout: int, level: int, emb_dim: int) -> _Stage:
        attn = self._attention(cout) if level in self.config.attention_levels else None
        res = ResBlock(cin, cout, emb_dim, self.config)
        return _Stage(res, attn, self._temporal(cout))

    def initialize_weights(self) -> None:
        """All initialisation decisions, in one place (DDPM's choices, kept by ADM):

        - convolutions and linear maps: Xavier-uniform (DDPM's variance_scaling(1, fan_avg,
          uniform)), biases zero;
        - the last convolution of every residual block, the output projection of every
          attention (self and cross) and of every spatial transformer, and the output
          convolution are zero, so each residual
          branch starts as the identity's zero update and the untrained network outputs 0;
        - video networks: the temporal convolutions, the temporal attention output
          projections, the frame index / rate maps and the first-frame input channels are
          zero, so a network inflated from an image network (`nets.inflate`) is exactly that
          network applied frame by frame;
        - noise-level MLP and class embedding: normal(0, 0.02) (DiT), keeping the conditioning
          near zero at first; GroupNorm/LayerNorm: weight 1, bias 0 (PyTorch's defaults).
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # fans include the 3x3 window
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.fc1.weight, std=0.02)
        nn.init.normal_(self.time_embed.fc2.weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, ResBlock):
                zero_(m.conv2)
            elif isinstance(m, (SelfAttention, CrossAttention)):
                zero_(m.proj)
            elif isinstance(m, SpatialTransformer):
                zero_(m.proj_out)
            elif isinstance(m, TemporalBlock):
                zero_(m.conv)
            elif isinstance(m, FrameEmbedding):
                zero_(m)
        zero_(self.conv_out)
        if self.config.first_frame:
            with torch.no_grad():
                self.conv_in.weight[:, -self.config.first_frame_channels :].zero_()

    def _check(
        self,
        x: Tensor,
        c_noise: Tensor,
        class_labels: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        pooled: Tensor | None,
        control: UNetControl | None,
    ) -> None:
        """Shape checks of the inputs (no host synchronisation), with the offending values."""
        cfg = self.config
        check_inputs("U-Net", cfg, x, c_noise, class_labels, context, context_mask, pooled)
        H, W = x.shape[-2:]
        factor = 2 ** (cfg.levels - 1)
        if H % factor or W % factor:
            raise ValueError(
                f"U-Net with {cfg.levels} levels needs H and W divisible by {factor}, got {H}x{W}"
            )
        if control is not None:
            n = len(cfg.skip_channels())
            if not isinstance(control, UNetControl) or len(control.skips) != n:
                got = len(control.skips) if isinstance(control, UNetControl) else type(control)
                raise ValueError(
                    f"control must be a UNetControl with {n} skip residuals, got {got}"
                )

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        *,
        class_labels: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        pooled: Tensor | None = None,
        control: UNetControl | None = None,
        fps: Tensor | None = None,
        first_frame: Tensor | None = None,
        first_frame_mask: Tensor | None = None,
    ) -> Tensor:
        """Run the network.

        Args:
            x: (B, in_channels + extra_in_channels, H, W); a video network takes a clip batch
                (B, in_channels + extra_in_channels, T, H, W) with 1 <= T <= max_frames.
            c_noise: (B,) noise-level code (e.g. 1000 t, a DDPM index or ln(sigma)/4).
            class_labels: (B,) long in [0, num_classes]; None means the null class.
            context: (B, L, context_dim) text token embeddings.
            context_mask: (B, L) bool, True for tokens to attend to.
            pooled: (B, pooled_dim) pooled text embedding.
            control: ControlNet residuals.
            fps: (B,) frames per second of the clips (video networks; None: not given).
            first_frame: (B, in_channels, H, W) clean latent of each clip's first frame
                (networks with `first_frame`; None: no image given, text-to-video).
            first_frame_mask: (B,) bool, False for clips given no first frame (training with
                the condition dropped); None: all given.
        Returns:
            (B, out_channels, H, W), channels_last memory when `self.channels_last`; a video
            network returns (B, out_channels, T, H, W).
        """
        cfg = self.config
        if not cfg.temporal:
            if fps is not None or first_frame is not None:
                raise ValueError("fps and first_frame are inputs of video U-Nets (temporal)")
            self._check(x, c_noise, class_labels, context, context_mask, pooled, control)
            return self._run(x, c_noise, class_labels, context, context_mask, pooled, control)
        frames = check_clip(
            "video U-Net", x, cfg.in_channels + cfg.extra_in_channels, cfg.max_frames
        )
        B = x.shape[0]
        if control is not None:
            raise ValueError("ControlNet residuals are not supported by video U-Nets")
        if fps is not None and fps.shape != (B,):
            raise ValueError(f"fps must have shape ({B},), got {tuple(fps.shape)}")
        per_frame = [_frames(t, frames) for t in (c_noise, class_labels, context, context_mask)]
        pooled_f = _frames(pooled, frames)
        x = fold_frames(x)  # (B*T, C, H, W)
        self._check(x, *per_frame, pooled_f, None)
        if cfg.first_frame:
            cond = self._first_frame_channels(first_frame, first_frame_mask, x, frames)
            x = torch.cat([x, cond], dim=1)
        elif first_frame is not None:
            raise ValueError("first_frame given to a video U-Net without first_frame = true")
        extra = self.frame_embed(B, frames, fps, x.device)
        out = self._run(x, *per_frame, pooled_f, None, frames=frames, extra=extra)
        return unfold_frames(out, frames)  # (B, out_channels, T, H, W)

    def _first_frame_channels(
        self, first_frame: Tensor | None, mask: Tensor | None, x: Tensor, frames: int
    ) -> Tensor:
        """The first-frame condition as input channels: (B*T, in_channels + 1, H, W) holding
        the latent and a mask of 1 on each clip's frame 0, zero elsewhere and without an image."""
        cfg = self.config
        BT, _, H, W = x.shape
        out = x.new_zeros(BT // frames, frames, cfg.in_channels + 1, H, W)
        if first_frame is not None:
            want = (BT // frames, cfg.in_channels, H, W)
            if tuple(first_frame.shape) != want:
                raise ValueError(
                    f"first_frame must have shape {want}, got {tuple(first_frame.shape)}"
                )
            keep = torch.ones(want[0], device=x.device) if mask is None else mask.to(x.dtype)
            if keep.shape != (want[0],):
                raise ValueError(
                    f"first_frame_mask must have shape ({want[0]},), got {tuple(keep.shape)}"
                )
            out[:, 0, :-1] = first_frame.to(x.dtype) * keep[:, None, None, None]
            out[:, 0, -1] = keep[:, None, None]
        return out.reshape(BT, cfg.in_channels + 1, H, W)

    def _run(
        self,
        x: Tensor,
        c_noise: Tensor,
        class_labels: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        pooled: Tensor | None,
        control: UNetControl | None,
        *,
        frames: int = 1,
        extra: Tensor | None = None,
    ) -> Tensor:
        """The network body on a batch of images (frames folded into the batch)."""
        cfg = self.config
        emb = self.embedding(c_noise, class_labels, pooled, extra)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h, skips = self.encoder(self.conv_in(x), emb, context, context_mask, frames)
        if control is not None:
            skips = [s + r for s, r in zip(skips, control.skips)]
        h = self.middle(h, emb, context, context_mask, frames)
        if control is not None and control.mid is not None:
            h = h + control.mid

        per_level = cfg.num_res_blocks + 1
        for i, stage in enumerate(self.up):
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask, frames)
            if i % per_level == per_level - 1 and i // per_level < len(self.upsample):
                h = self.upsample[i // per_level](h)
        return self.conv_out(silu(self.norm_out(h)))


def _frames(t: Tensor | None, frames: int) -> Tensor | None:
    """A per-clip input repeated for each of its frames: (B, ...) -> (B * T, ...)."""
    return None if t is None else t.repeat_interleave(frames, dim=0)
