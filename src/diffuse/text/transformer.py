"""The text Transformer: one network for the masked diffusion model and its autoregressive
baseline.

A pre-norm Transformer over token ids with rotary position embeddings (Su et al. 2021,
RoFormer) in every attention layer. `causal=False` is the bidirectional denoiser of masked
diffusion; `causal=True` is the autoregressive model, which may keep a key/value cache for
generation. With `time_conditioning` the diffusion time t modulates every block through adaLN
(scale, shift and a zero-initialised gate, as in DiT); MDLM shows the time input can be dropped
for masked diffusion (the fraction of masks already tells it), so it is optional.

    net = TextTransformer(TextNetConfig(vocab_size=65, causal=False))
    logits = net(tokens)            # [B, L, 65]; tokens may hold the mask id 65
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KVCache", "TEXT_PRESETS", "TextNetConfig", "TextTransformer", "text_preset"]


@dataclass(frozen=True)
class TextNetConfig:
    """Architecture of a `TextTransformer`.

    Args:
        vocab_size: characters V; the input embedding has V + 1 rows (the mask / begin token).
        width: model width.
        depth: number of blocks.
        heads: attention heads (width must divide by it; head width must be even for rotary).
        mlp_ratio: MLP hidden width / width.
        max_length: the longest sequence the network is trained on (recorded; rotary needs
            no table, but generation and evaluation check lengths against it).
        causal: causal attention (autoregressive) instead of bidirectional.
        time_conditioning: adaLN modulation by the diffusion time (diffusion only).
        rope_base: rotary frequency base.
    """

    vocab_size: int = 65
    width: int = 192
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0
    max_length: int = 256
    causal: bool = False
    time_conditioning: bool = False
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        checks = {
            "vocab_size": self.vocab_size >= 1,
            "width": self.width >= 1,
            "depth": self.depth >= 1,
            "heads": self.heads >= 1 and self.width % max(self.heads, 1) == 0,
            "mlp_ratio": self.mlp_ratio > 0,
            "max_length": self.max_length >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TextNetConfig.{name} = {getattr(self, name)!r} is invalid")
        if (self.width // self.heads) % 2:
            raise ValueError(
                f"head width {self.width // self.heads} must be even (rotary pairs channels)"
            )
        if self.causal and self.time_conditioning:
            raise ValueError("time_conditioning applies to the diffusion (non-causal) network")


# Named sizes; the trainer's [text] section picks one and may override fields.
TEXT_PRESETS: dict[str, TextNetConfig] = {
    "text-tiny": TextNetConfig(width=64, depth=2, heads=2, max_length=64),
    "text-small": TextNetConfig(width=192, depth=6, heads=6, max_length=256),
    "text-base": TextNetConfig(width=384, depth=8, heads=6, max_length=256),
}


def text_preset(name: str) -> TextNetConfig:
    """The preset `name` (ValueError listing the presets if unknown)."""
    if name not in TEXT_PRESETS:
        raise ValueError(f"unknown text network preset {name!r}; one of {sorted(TEXT_PRESETS)}")
    return TEXT_PRESETS[name]


def _rotary(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotate channel pairs of x [B, H, L, D] by position-dependent angles (RoFormer Eq. 34)."""
    d = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.float()[:, None] * inv_freq[None, :]  # [L, D/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)  # interleave the pairs back: [B, H, L, D]


@dataclass
class KVCache:
    """Keys and values of the tokens an autoregressive network has read, per block.

    Attributes:
        keys, values: per block, [B, H, length, D] (None before the first call).
        length: tokens cached so far.
    """

    keys: list[Tensor | None] = field(default_factory=list)
    values: list[Tensor | None] = field(default_factory=list)
    length: int = 0


class _Attention(nn.Module):
    def __init__(self, cfg: TextNetConfig) -> None:
        super().__init__()
        self.heads, self.causal, self.base = cfg.heads, cfg.causal, cfg.rope_base
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)

    def forward(
        self, x: Tensor, positions: Tensor, cache: KVCache | None = None, block: int = 0
    ) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotary(q, positions, self.base), _rotary(k, positions, self.base)  # [B, H, n, D]
        causal = self.causal
        if cache is not None:
            if cache.keys[block] is not None:
                if n > 1:
                    raise ValueError("after the prompt, a cached network reads one token a call")
                k = torch.cat([cache.keys[block], k], dim=2)
                v = torch.cat([cache.values[block], v], dim=2)
                causal = False  # the one new query may see every cached key
            cache.keys[block], cache.values[block] = k, v
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, H, n, D]
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class _Block(nn.Module):
    def __init__(self, cfg: TextNetConfig) -> None:
        super().__init__()
        affine = not cfg.time_conditioning  # adaLN supplies scale and shift instead
        self.norm1 = nn.LayerNorm(cfg.width, elementwise_affine=affine)
        self.attn = _Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, elementwise_affine=affine)
        hidden = int(cfg.width * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.width)
        )
        # shift, scale, gate for the attention and the MLP branch, from the time embedding
        self.ada = nn.Linear(cfg.width, 6 * cfg.width) if cfg.time_conditioning else None

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        temb: Tensor | None,
        cache: KVCache | None = None,
        block: int = 0,
    ) -> Tensor:
        if self.ada is None:
            x = x + self.attn(self.norm1(x), positions, cache, block)
            return x + self.mlp(self.norm2(x))
        s1, c1, g1, s2, c2, g2 = self.ada(temb)[:, None, :].chunk(6, dim=-1)  # each [B, 1, W]
        x = x + g1 * self.attn(self.norm1(x) * (1 + c1) + s1, positions, cache, block)
        return x + g2 * self.mlp(self.norm2(x) * (1 + c2) + s2)


class TextTransformer(nn.Module):
    """Token ids [B, L] (and the diffusion time [B] when time-conditioned) -> logits [B, L, V].

    The same class serves both objectives: bidirectional for masked diffusion, causal for the
    autoregressive baseline, so the two models of a comparison differ only in `causal`.
    """

    def __init__(self, config: TextNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.embed = nn.Embedding(cfg.vocab_size + 1, cfg.width)  # + the mask / begin token
        self.time_mlp = (
            nn.Sequential(nn.Linear(256, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width))
            if cfg.time_conditioning
            else None
        )
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Every initialisation decision, with its reason.

        - Linear and embedding weights N(0, 0.02), biases 0 (GPT-2's scheme, stable for small
          pre-norm Transformers).
        - The output projection of each residual branch scaled by 1 / sqrt(2 depth) (GPT-2), so
          the residual stream's variance does not grow with depth.
        - adaLN projections zero: every gate starts at 0, so a time-conditioned network starts
          as the identity map through its blocks (DiT's adaLN-Zero).
        """
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        scale = 0.02 / math.sqrt(2 * self.config.depth)
        for block in self.blocks:
            nn.init.normal_(block.attn.out.weight, std=scale)
            nn.init.normal_(block.mlp[2].weight, std=scale)
            if block.ada is not None:
                nn.init.zeros_(block.ada.weight)
                nn.init.zeros_(block.ada.bias)

    def _time_embedding(self, t: Tensor) -> Tensor:
        """Sinusoidal features of t * 1000 [B, 256] through an MLP -> [B, W]."""
        half = 128
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None, :]
        assert self.time_mlp is not None
        return self.time_mlp(torch.cat([args.cos(), args.sin()], dim=-1))

    def forward(
        self, tokens: Tensor, t: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """Logits over the V characters at every position.

        Args:
            tokens: [B, L] int64 ids in 0..V (V = the mask / begin token).
            t: [B] diffusion times; required when time-conditioned, ignored otherwise.
            cache: a `KVCache` (causal networks only): the tokens continue the cached ones.
        Returns:
            [B, L, V] float logits.
        """
        cfg = self.config
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [B, L], got shape {tuple(tokens.shape)}")
        temb = None
        if cfg.time_conditioning:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            temb = F.silu(self._time_embedding(t.reshape(-1).expand(tokens.shape[0])))
        start = 0
        if cache is not None:
            if not cfg.causal:
                raise ValueError("a key/value cache needs a causal network")
            if not cache.keys:
                cache.keys, cache.values = [None] * cfg.depth, [None] * cfg.depth
            start = cache.length
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)  # [B, L, W]
        for i, block in enumerate(self.blocks):
            x = block(x, positions, temb, cache, i)
        if cache is not None:
            cache.length = start + tokens.shape[1]
        return self.head(self.norm(x)).float()
