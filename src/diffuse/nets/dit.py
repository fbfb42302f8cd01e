"""Diffusion Transformer (DiT, Peebles & Xie 2023) with class, cross-attention or joint
(MMDiT, Esser et al. 2024) text conditioning.

The image is cut into p x p patches, embedded linearly, given 2-D sine-cosine (or rotary)
positions and processed by transformer blocks whose LayerNorms are modulated by the conditioning
vector (adaLN-Zero: shift, scale and a residual gate regressed from the noise-level and class
embedding, all zero at initialisation so every block starts as the identity).

    net = DiT(dit_preset("dit-s/2"))
    out = net(latents, c_noise, class_labels=y)   # latents: (B, 4, 32, 32)

Text conditioning: `text_mode="cross"` adds a cross-attention layer to each block (PixArt-alpha
style); `text_mode="joint"` gives the text tokens their own weights and lets both streams attend
over the concatenated sequence (SD3's MMDiT; FLUX's double-stream blocks).

PixArt-alpha's own layout (Chen et al. 2023, sec. 2.3) is `adaln="single"` (one modulation
map shared by all blocks, each block adding a learned (6, D) table: "adaLN-single"),
`cross_norm=False` (no LayerNorm before the cross-attention) and `context_mlp=True` (the caption
projection: a two-layer tanh-GELU MLP from the text width to D before every cross-attention).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuse.nets.inputs import check_inputs
from diffuse.nets.layers import (
    CrossAttention,
    JointAttention,
    Linear,
    Mlp,
    NoiseEmbedding,
    SelfAttention,
    modulate,
    patchify,
    patchify_3d,
    rope_2d,
    sincos_1d,
    sincos_2d,
    unpatchify,
    unpatchify_3d,
    zero_,
)
from diffuse.nets.temporal import check_clip

__all__ = ["PRESETS", "DiT", "DiTConfig", "DiTControl", "dit_preset"]

_LN_EPS = 1e-6


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a Diffusion Transformer. Zero means "absent" for optional sizes.

    Attributes:
        in_channels: channels of the (latent) image being denoised.
        out_channels: output channels (DiT's learned-sigma variant would use 2 * in_channels).
        extra_in_channels: further input channels concatenated by the caller.
        image_size: side of the training input; fixes the stored position table (other sizes
            divisible by patch_size also work).
        patch_size: side of a square patch.
        hidden_size: token width.
        depth: number of transformer blocks.
        num_heads: attention heads; must divide hidden_size.
        mlp_ratio: MLP hidden width / hidden_size.
        num_classes: class-conditional with this many classes (0: not); index num_classes is
            the null class for classifier-free guidance.
        context_dim: width of text token embeddings (0: no text conditioning).
        text_mode: "cross" (cross-attention per block) or "joint" (MMDiT joint attention).
        pooled_dim: width of a pooled text embedding added to the conditioning vector (0: none).
        pos_embed: "sincos" (fixed 2-D sine-cosine, added to tokens) or "rope" (2-D rotary
            positions in every attention).
        rope_theta: base of the rotary frequencies.
        qk_norm: RMS-normalise queries and keys per head.
        freq_dim: size of the sinusoidal noise-level features.
        noise_scale: multiplier of c_noise before the sinusoidal features.
        max_period: longest period of the sinusoidal features.
        freq_shift: shortens the sinusoidal frequency ladder (1 in the original DiT code and in
            diffusers' DiT; see `layers.sinusoidal_embedding`).
        mlp_norm_eps: epsilon of the LayerNorm before each MLP (diffusers' DiT: 1e-5).
        adaln: "zero" (a modulation map per block, DiT) or "single" (one shared map plus a
            learned table per block, PixArt-alpha).
        cross_norm: LayerNorm before each cross-attention (PixArt-alpha has none).
        context_mlp: project text tokens to hidden_size by a two-layer tanh-GELU MLP first
            (PixArt-alpha's caption projection); the cross-attentions then read width D.
        pos_scale: multiplies the sin-cos grid positions (PixArt's 1 / interpolation_scale).
        frames: > 0 makes a video DiT taking clips (B, C, T, H, W) of up to this many frames,
            cut into temporal_patch x patch_size x patch_size space-time patches with
            sine-cosine positions in time added to those in space (needs pos_embed "sincos").
        temporal_patch: frames per space-time patch.
        video_attention: "joint" (every token attends to every token of the clip) or
            "factorised" (each block attends within a frame, then a temporal attention layer,
            zero-initialised, attends along each patch position's frames).
    """

    in_channels: int = 4
    out_channels: int = 4
    extra_in_channels: int = 0
    image_size: int = 32
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 0
    context_dim: int = 0
    text_mode: Literal["cross", "joint"] = "cross"
    pooled_dim: int = 0
    pos_embed: Literal["sincos", "rope"] = "sincos"
    rope_theta: float = 10000.0
    qk_norm: bool = False
    freq_dim: int = 256
    noise_scale: float = 1.0
    max_period: float = 10000.0
    freq_shift: float = 0.0
    mlp_norm_eps: float = 1e-6
    adaln: Literal["zero", "single"] = "zero"
    cross_norm: bool = True
    context_mlp: bool = False
    pos_scale: float = 1.0
    frames: int = 0
    temporal_patch: int = 1
    video_attention: Literal["joint", "factorised"] = "joint"

    def __post_init__(self) -> None:
        if self.frames < 0 or self.temporal_patch < 1:
            raise ValueError(
                f"DiTConfig needs frames >= 0 and temporal_patch >= 1, got frames={self.frames}, "
                f"temporal_patch={self.temporal_patch}"
            )
        if self.frames and self.frames % self.temporal_patch:
            raise ValueError(
                f"DiTConfig.temporal_patch={self.temporal_patch} does not divide "
                f"frames={self.frames}"
            )
        if self.video_attention not in ("joint", "factorised"):
            raise ValueError(
                "DiTConfig.video_attention must be 'joint' or 'factorised', got "
                f"{self.video_attention!r}"
            )
        if self.frames and self.pos_embed != "sincos":
            raise ValueError("a video DiT (frames > 0) needs pos_embed = 'sincos'")
        for name in ("in_channels", "out_channels", "image_size", "patch_size", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("depth", "num_heads", "freq_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("extra_in_channels", "num_classes", "context_dim", "pooled_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"DiTConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"DiTConfig.num_heads={self.num_heads} does not divide "
                f"hidden_size={self.hidden_size}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"DiTConfig.patch_size={self.patch_size} does not divide "
                f"image_size={self.image_size}"
            )
        if self.text_mode not in ("cross", "joint"):
            raise ValueError(
                f"DiTConfig.text_mode must be 'cross' or 'joint', got {self.text_mode!r}"
            )
        if self.pos_embed not in ("sincos", "rope"):
            raise ValueError(
                f"DiTConfig.pos_embed must be 'sincos' or 'rope', got {self.pos_embed!r}"
            )
        if self.pos_embed == "sincos" and self.hidden_size % 4:
            raise ValueError(
                f"DiTConfig: sin-cos positions need hidden_size divisible by 4, got "
                f"{self.hidden_size}"
            )
        if self.pos_embed == "rope" and self.head_dim % 4:
            raise ValueError(
                f"DiTConfig: rotary positions need a head size divisible by 4, got "
                f"hidden_size={self.hidden_size} / num_heads={self.num_heads} = {self.head_dim}"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.freq_dim % 2:
            raise ValueError(f"DiTConfig.freq_dim must be even, got {self.freq_dim}")
        if self.adaln not in ("zero", "single"):
            raise ValueError(f"DiTConfig.adaln must be 'zero' or 'single', got {self.adaln!r}")
        if self.adaln == "single" and self.context_dim and self.text_mode == "joint":
            raise ValueError("DiTConfig: adaln='single' needs text_mode='cross'")
        if self.context_mlp and not (self.context_dim and self.text_mode == "cross"):
            raise ValueError("DiTConfig.context_mlp needs context_dim > 0 and text_mode='cross'")
        if not self.pos_scale > 0:
            raise ValueError(f"DiTConfig.pos_scale must be > 0, got {self.pos_scale}")

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.hidden_size // self.num_heads


def _dit(depth: int, hidden: int, heads: int, patch: int) -> DiTConfig:
    # The published DiT models (Peebles & Xie 2023, table 1) on 256 px ImageNet latents.
    return DiTConfig(
        depth=depth,
        hidden_size=hidden,
        num_heads=heads,
        patch_size=patch,
        image_size=32,
        in_channels=4,
        out_channels=4,
        num_classes=1000,
    )


PRESETS: dict[str, DiTConfig] = {
    "dit-tiny": DiTConfig(
        depth=2, hidden_size=64, num_heads=4, patch_size=2, image_size=16, num_classes=10
    ),
    "dit-s/2": _dit(12, 384, 6, 2),
    "dit-b/2": _dit(12, 768, 12, 2),
    "dit-l/2": _dit(24, 1024, 16, 2),
    "dit-xl/2": _dit(28, 1152, 16, 2),
}


def dit_preset(name: str, **overrides: object) -> DiTConfig:
    """A named DiT config, optionally with fields replaced.

    Raises:
        ValueError: unknown name (listing the known ones) or invalid overrides.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class DiTControl:
    """ControlNet residuals for a DiT (as PixArt's ControlNet-Transformer): `blocks[i]` is added
    to the image tokens after block i, for the first len(blocks) blocks.

    Attributes:
        blocks: tuple of (B, N, hidden_size), N = (H / p) * (W / p).
    """

    blocks: tuple[Tensor, ...]


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def _ln(x: Tensor) -> Tensor:
    """LayerNorm without affine parameters (adaLN supplies them)."""
    return F.layer_norm(x, x.shape[-1:], eps=_LN_EPS)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block, with optional cross-attention to text tokens.

    Args:
        cfg: the DiT config.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.attn = SelfAttention(D, cfg.num_heads, qk_norm=cfg.qk_norm)
        self.norm_cross = self.cross = None
        if cfg.context_dim:
            width = D if cfg.context_mlp else cfg.context_dim
            self.cross = CrossAttention(D, width, cfg.num_heads, qk_norm=cfg.qk_norm)
            if cfg.cross_norm:
                self.norm_cross = nn.LayerNorm(D, eps=_LN_EPS)
        self.mlp = Mlp(D, int(D * cfg.mlp_ratio))
        # shift/scale/gate for attention and MLP: regressed from c here (adaLN-Zero), or the
        # shared map's output plus this block's table (adaLN-single)
        self.ada = Linear(D, 6 * D) if cfg.adaln == "zero" else None
        self.table = nn.Parameter(torch.zeros(6, D)) if cfg.adaln == "single" else None
        self.mlp_norm_eps = cfg.mlp_norm_eps

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Args:
            x: (B, N, D) tokens.
            c: (B, D) conditioning vector after SiLU (adaLN-Zero), or (B, 6, D) output of
                the shared modulation map (adaLN-single).
            context: (B, L, context_dim) or None; mask: (B, L) or None.
            rope: optional (cos, sin), each (N, head_dim/2).
        Returns:
            (B, N, D).
        """
        if self.table is not None:
            mods = (self.table[None] + c).chunk(6, dim=1)  # 6 x (B, 1, D)
        else:
            mods = self.ada(c)[:, None].chunk(6, dim=-1)  # 6 x (B, 1, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        x = torch.addcmul(x, gate1, self.attn(modulate(_ln(x), shift1, scale1), rope))
        if self.cross is not None and context is not None:
            h = x if self.norm_cross is None else self.norm_cross(x)
            x = x + self.cross(h, context, mask)
        h = F.layer_norm(x, x.shape[-1:], eps=self.mlp_norm_eps)
        return torch.addcmul(x, gate2, self.mlp(modulate(h, shift2, scale2)))


class JointBlock(nn.Module):
    """MMDiT block: image and text streams with separate adaLN, projections and MLPs that
    attend jointly (SD3). The last block drops the text stream's outputs (`context_out=False`).

    Args:
        cfg: the DiT config.
        context_out: whether the text stream is updated (False for the last block).
    """

    def __init__(self, cfg: DiTConfig, *, context_out: bool = True) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.context_out = context_out
        self.attn = JointAttention(D, cfg.num_heads, qk_norm=cfg.qk_norm, context_out=context_out)
        self.mlp = Mlp(D, int(D * cfg.mlp_ratio))
        self.ada = Linear(D, 6 * D)
        self.c_mlp = Mlp(D, int(D * cfg.mlp_ratio)) if context_out else None
        # The text stream of the last block only produces keys and values: shift and scale.
        self.c_ada = Linear(D, (6 if context_out else 2) * D)

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        context: Tensor,
        mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Args:
            x: (B, N, D) image tokens; c: (B, D) conditioning after SiLU.
            context: (B, L, D) text tokens; mask: (B, L) or None.
            rope: optional (cos, sin) for the image tokens.
        Returns:
            (x, context), both updated (context unchanged in the last block).
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        cmods = self.c_ada(c)[:, None].chunk(6 if self.context_out else 2, dim=-1)
        hx = modulate(_ln(x), shift1, scale1)
        hc = modulate(_ln(context), cmods[0], cmods[1])
        ox, oc = self.attn(hx, hc, mask, rope)
        x = torch.addcmul(x, gate1, ox)
        x = torch.addcmul(x, gate2, self.mlp(modulate(_ln(x), shift2, scale2)))
        if self.context_out:
            cshift1, cscale1, cgate1, cshift2, cscale2, cgate2 = cmods
            context = torch.addcmul(context, cgate1, oc)
            h = self.c_mlp(modulate(_ln(context), cshift2, cscale2))
            context = torch.addcmul(context, cgate2, h)
        return x, context


class TemporalAttention(nn.Module):
    """Pre-norm self-attention along the frames of each patch position (factorised video
    attention), with sine-cosine frame positions and a zero-initialised output projection.

    Args:
        cfg: the DiT config.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=_LN_EPS)
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads, qk_norm=cfg.qk_norm)

    def forward(self, x: Tensor, t: int) -> Tensor:
        """Args: x (B * t, N, D) tokens of every frame, t frames. Returns the same shape."""
        BT, N, D = x.shape
        B = BT // t
        seq = x.reshape(B, t, N, D).transpose(1, 2).reshape(B * N, t, D)  # (B*N, t, D)
        pos = sincos_1d(t, D, device=x.device).to(x.dtype)
        seq = seq + self.attn(self.norm(seq) + pos)
        return seq.reshape(B, N, t, D).transpose(1, 2).reshape(BT, N, D)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens to patches.

    With `single` (PixArt-alpha) shift and scale are a learned (2, D) table plus the noise
    embedding itself (before SiLU), instead of a linear map of the conditioning vector.
    """

    def __init__(self, D: int, patch_dim: int, *, single: bool = False) -> None:
        super().__init__()
        self.ada = None if single else Linear(D, 2 * D)
        self.table = nn.Parameter(torch.zeros(2, D)) if single else None
        self.linear = Linear(D, patch_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """(B, N, D), (B, D) -> (B, N, patch_dim); c after SiLU, or before it with `single`."""
        if self.table is not None:
            shift, scale = (self.table[None] + c[:, None]).chunk(2, dim=1)  # 2 x (B, 1, D)
        else:
            shift, scale = self.ada(c)[:, None].chunk(2, dim=-1)  # 2 x (B, 1, D)
        return self.linear(modulate(_ln(x), shift, scale))


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """The Diffusion Transformer denoiser network.

    Args:
        config: the architecture.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        D, p = cfg.hidden_size, cfg.patch_size
        pt = cfg.temporal_patch if cfg.frames else 1
        self.patch_embed = Linear((cfg.in_channels + cfg.extra_in_channels) * pt * p * p, D)
        self.time_embed = NoiseEmbedding(
            cfg.freq_dim,
            D,
            max_period=cfg.max_period,
            scale=cfg.noise_scale,
            freq_shift=cfg.freq_shift,
        )
        # Index num_classes is the null class for classifier-free guidance.
        self.class_embed = nn.Embedding(cfg.num_classes + 1, D) if cfg.num_classes else None
        self.pooled_embed = (
            nn.Sequential(Linear(cfg.pooled_dim, D), nn.SiLU(), Linear(D, D))
            if cfg.pooled_dim
            else None
        )
        joint = cfg.context_dim > 0 and cfg.text_mode == "joint"
        self.context_embed = Linear(cfg.context_dim, D) if joint else None
        self.context_mlp = (
            nn.Sequential(Linear(cfg.context_dim, D), nn.GELU(approximate="tanh"), Linear(D, D))
            if cfg.context_mlp
            else None
        )
        single = cfg.adaln == "single"
        self.ada_single = Linear(D, 6 * D) if single else None  # adaLN-single's shared map
        if joint:
            self.blocks = nn.ModuleList(
                JointBlock(cfg, context_out=i < cfg.depth - 1) for i in range(cfg.depth)
            )
        else:
            self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final = FinalLayer(D, pt * p * p * cfg.out_channels, single=single)
        factorised = cfg.frames and cfg.video_attention == "factorised"
        self.temporal = (
            nn.ModuleList(TemporalAttention(cfg) for _ in range(cfg.depth)) if factorised else None
        )
        g = cfg.image_size // p
        if cfg.pos_embed == "sincos":
            pos = sincos_2d(g, g, D, scale=cfg.pos_scale)[None]  # (1, N, D)
            self.register_buffer("pos", pos, persistent=False)
        else:
            cos, sin = rope_2d(g, g, cfg.head_dim, theta=cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)  # (N, head_dim/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation decisions, in one place (DiT's `initialize_weights`):

        - linear maps (the patch embedding included): Xavier-uniform, biases zero, as ViT;
        - noise-level MLP, pooled MLP and class embedding: normal(0, 0.02);
        - every adaLN modulation (blocks and final layer): zero weights and biases, so gates
          are 0 and each block is the identity at initialisation ("adaLN-Zero"); with
          adaLN-single the shared map is zero and the tables normal(0, 1 / sqrt(D)), as
          PixArt-alpha, and the caption MLP normal(0, 0.02);
        - the final linear map: zero, so the untrained network outputs 0;
        - cross-attention output projections: zero, keeping the blocks identities with text too;
        - temporal attention output projections (factorised video DiT): zero, so each frame
          starts independent of the others.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.fc1.weight, std=0.02)
        nn.init.normal_(self.time_embed.fc2.weight, std=0.02)
        if self.pooled_embed is not None:
            nn.init.normal_(self.pooled_embed[0].weight, std=0.02)
            nn.init.normal_(self.pooled_embed[2].weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        if self.context_mlp is not None:
            nn.init.normal_(self.context_mlp[0].weight, std=0.02)
            nn.init.normal_(self.context_mlp[2].weight, std=0.02)
        if self.ada_single is not None:
            zero_(self.ada_single)
        D = self.config.hidden_size
        for block in self.blocks:
            if block.ada is not None:
                zero_(block.ada)
            if getattr(block, "table", None) is not None:
                nn.init.normal_(block.table, std=D**-0.5)
            if isinstance(block, JointBlock):
                zero_(block.c_ada)
            if getattr(block, "cross", None) is not None:
                zero_(block.cross.proj)
        if self.final.ada is not None:
            zero_(self.final.ada)
        else:
            nn.init.normal_(self.final.table, std=D**-0.5)
        zero_(self.final.linear)
        for layer in self.temporal or ():
            zero_(layer.attn.proj)

    def _positions(
        self, h: int, w: int, x: Tensor
    ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
        """Position table for an h x w token grid: (added embedding, rotary (cos, sin))."""
        cfg = self.config
        g = cfg.image_size // cfg.patch_size
        if cfg.pos_embed == "sincos":
            pos = (
                self.pos
                if (h, w) == (g, g)
                else sincos_2d(h, w, cfg.hidden_size, device=x.device, scale=cfg.pos_scale)[None]
            )
            return pos.to(x.dtype), None
        if (h, w) == (g, g):
            return None, (self.rope_cos, self.rope_sin)
        return None, rope_2d(h, w, cfg.head_dim, theta=cfg.rope_theta, device=x.device)

    def _check(
        self,
        x: Tensor,
        c_noise: Tensor,
        class_labels: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        pooled: Tensor | None,
        control: DiTControl | None,
    ) -> None:
        """Shape checks of the inputs (no host synchronisation), with the offending values."""
        cfg = self.config
        check_inputs("DiT", cfg, x, c_noise, class_labels, context, context_mask, pooled)
        H, W = x.shape[-2:]
        p = cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"DiT patch size {p} does not divide the input size {H}x{W}")
        if context is None and cfg.context_dim and cfg.text_mode == "joint":
            raise ValueError(
                "a joint-attention DiT needs context (B, L, "
                f"{cfg.context_dim}); pass an empty-prompt encoding for the unconditional branch"
            )
        if control is not None and (
            not isinstance(control, DiTControl) or len(control.blocks) > cfg.depth
        ):
            got = len(control.blocks) if isinstance(control, DiTControl) else type(control)
            raise ValueError(
                f"control must be a DiTControl with at most {cfg.depth} residuals, got {got}"
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
        control: DiTControl | None = None,
    ) -> Tensor:
        """Run the network.

        Args:
            x: (B, in_channels + extra_in_channels, H, W), H and W divisible by patch_size; a
                video DiT (frames > 0) takes clips (B, C, T, H, W), T <= frames and divisible
                by temporal_patch, and returns (B, out_channels, T, H, W).
            c_noise: (B,) noise-level code.
            class_labels: (B,) long in [0, num_classes]; None means the null class.
            context: (B, L, context_dim) text token embeddings.
            context_mask: (B, L) bool, True for tokens to attend to.
            pooled: (B, pooled_dim) pooled text embedding.
            control: ControlNet residuals per block.
        Returns:
            (B, out_channels, H, W).
        """
        cfg = self.config
        if cfg.frames:
            return self._video(x, c_noise, class_labels, context, context_mask, pooled, control)
        self._check(x, c_noise, class_labels, context, context_mask, pooled, control)
        p = cfg.patch_size
        h, w = x.shape[2] // p, x.shape[3] // p
        tokens = self.patch_embed(patchify(x, p))  # (B, N, D), N = h * w
        pos, rope = self._positions(h, w, tokens)
        if pos is not None:
            tokens = tokens + pos
        patches = self._blocks(
            tokens, c_noise, class_labels, context, context_mask, pooled, control, rope=rope
        )
        return unpatchify(patches, p, h, w)  # (B, out_channels, H, W)

    def _video(
        self,
        x: Tensor,
        c_noise: Tensor,
        class_labels: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        pooled: Tensor | None,
        control: DiTControl | None,
    ) -> Tensor:
        """`forward` of a video DiT: x (B, C, T, H, W) -> (B, out_channels, T, H, W)."""
        cfg = self.config
        frames = check_clip("video DiT", x, cfg.in_channels + cfg.extra_in_channels, cfg.frames)
        if control is not None:
            raise ValueError("ControlNet residuals are not supported by video DiTs")
        pt, p = cfg.temporal_patch, cfg.patch_size
        if frames % pt:
            raise ValueError(f"video DiT temporal_patch={pt} does not divide T={frames}")
        self._check(x[:, :, 0], c_noise, class_labels, context, context_mask, pooled, None)
        t, h, w = frames // pt, x.shape[3] // p, x.shape[4] // p
        tokens = self.patch_embed(patchify_3d(x, pt, p))  # (B, t*h*w, D)
        B, D = tokens.shape[0], cfg.hidden_size
        space = sincos_2d(h, w, D, device=x.device)  # (h*w, D)
        time = sincos_1d(t, D, device=x.device)  # (t, D)
        pos = (time[:, None] + space[None]).reshape(1, t * h * w, D)
        tokens = tokens + pos.to(tokens.dtype)
        cond = (c_noise, class_labels, context, context_mask, pooled)
        if self.temporal is not None:  # factorised: frames folded into the batch
            tokens = tokens.reshape(B * t, h * w, D)
            cond = tuple(None if v is None else v.repeat_interleave(t, dim=0) for v in cond)
        tokens = self._blocks(tokens, *cond, None, frames=t)
        tokens = tokens.reshape(B, t * h * w, -1)
        return unpatchify_3d(tokens, pt, p, t, h, w)  # (B, out_channels, T, H, W)

    def _blocks(
        self,
        tokens: Tensor,
        c_noise: Tensor,
        class_labels: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        pooled: Tensor | None,
        control: DiTControl | None,
        *,
        frames: int = 1,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """The conditioning vector, the transformer blocks (each followed by temporal
        attention in a factorised video DiT) and the final layer: (B, N, D) -> patches."""
        cfg = self.config
        c = self.time_embed(c_noise)  # (B, D)
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full_like(c_noise, cfg.num_classes, dtype=torch.long)
            c = c + self.class_embed(class_labels)
        if self.pooled_embed is not None and pooled is not None:
            c = c + self.pooled_embed(pooled)
        embedding, c = c, F.silu(c)  # every adaLN applies SiLU first; do it once here
        if self.ada_single is not None:
            c = self.ada_single(c).unflatten(1, (6, cfg.hidden_size))  # (B, 6, D) shared
        if self.context_mlp is not None and context is not None:
            context = self.context_mlp(context)  # (B, L, D)

        n_control = 0 if control is None else len(control.blocks)
        if self.context_embed is not None:
            ctx = self.context_embed(context)  # (B, L, D)
            for i, block in enumerate(self.blocks):
                tokens, ctx = block(tokens, c, ctx, context_mask, rope)
                if i < n_control:
                    tokens = tokens + control.blocks[i]
                if self.temporal is not None:
                    tokens = self.temporal[i](tokens, frames)
        else:
            for i, block in enumerate(self.blocks):
                tokens = block(tokens, c, context, context_mask, rope)
                if i < n_control:
                    tokens = tokens + control.blocks[i]
                if self.temporal is not None:
                    tokens = self.temporal[i](tokens, frames)
        final_c = embedding if self.ada_single is not None else c
        return self.final(tokens, final_c)  # (B, N, patch_dim)
