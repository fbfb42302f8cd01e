"""Building blocks shared by the U-Net and the Diffusion Transformer.

Everything here is a plain function or a small module over tensors; nothing knows about noise
processes. Attention always goes through `torch.nn.functional.scaled_dot_product_attention`.
Token tensors are (B, N, D); image tensors are (B, C, H, W), usually in channels_last memory.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CrossAttention",
    "GroupNorm",
    "JointAttention",
    "Linear",
    "Mlp",
    "NoiseEmbedding",
    "SelfAttention",
    "apply_rope",
    "attention_by_length",
    "batch_invariant",
    "context_lengths",
    "invariant_batch_size",
    "constant_context",
    "conv3x3_upsample2x",
    "upsample_kernel",
    "key_padding_mask",
    "pad_batch",
    "linear",
    "modulate",
    "patchify",
    "patchify_3d",
    "reference_kernels",
    "rope_2d",
    "silu",
    "sincos_1d",
    "sincos_2d",
    "sinusoidal_embedding",
    "unpatchify",
    "unpatchify_3d",
    "use_reference_kernels",
    "zero_",
]

# --------------------------------------------------------------------------------------------
# Fast kernels vs reference formulations
# --------------------------------------------------------------------------------------------

_REFERENCE = False


@contextlib.contextmanager
def reference_kernels(enabled: bool = True) -> Iterator[None]:
    """Run networks with their textbook formulation instead of the fast, equivalent kernels.

    The fast paths compute the same function with fewer multiplications (nearest upsampling
    followed by a 3x3 convolution as one stride-2 transposed convolution; 3x3 convolutions by
    Winograd's algorithm on CPU, see `nets.winograd`). FLOP counts are taken under this
    context so that they describe the architecture, as papers count them; tests use it to
    check that both paths agree.
    """
    global _REFERENCE
    old, _REFERENCE = _REFERENCE, enabled
    try:
        yield
    finally:
        _REFERENCE = old


def use_reference_kernels() -> bool:
    """True inside `reference_kernels()`."""
    return _REFERENCE


_CONTEXT_SCOPE = threading.local()  # .id > 0: this thread's current `constant_context` scope
_SCOPES = itertools.count(1)


@contextlib.contextmanager
def constant_context() -> Iterator[None]:
    """A scope in which text contexts are not changed in place (a sampling run): each
    `CrossAttention` keeps the keys and values it projected from the context tensor it last
    saw and reuses them while it is given that same tensor object again in the same scope,
    when no graph is recorded. A sampler calls the network once per step with one context,
    so the projections are made once per run instead of once per step."""
    old = _scope_id()
    _CONTEXT_SCOPE.id = next(_SCOPES)
    try:
        yield
    finally:
        _CONTEXT_SCOPE.id = old


def _scope_id() -> int:
    """This thread's current `constant_context` scope (0: none). Per thread, so a sampling run
    paused in one thread never lends its scope to a network call made in another."""
    return getattr(_CONTEXT_SCOPE, "id", 0)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of `module` in place and return it (zero-init of residual branches).

    Args:
        module: any module.
    Returns:
        The same module.
    """
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def silu(x: Tensor) -> Tensor:
    """SiLU that works in place when no graph is recorded (sampling), saving one allocation.

    Under autograd the input must be kept for the backward pass, so it is not overwritten.
    """
    return F.silu(x, inplace=not torch.is_grad_enabled())


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation x * (1 + scale) + shift in one fused kernel (DiT, Peebles & Xie 2023).

    Args:
        x: (B, N, D) normalised tokens.
        shift, scale: (B, 1, D).
    Returns:
        (B, N, D).
    """
    return torch.addcmul(shift, x, 1 + scale)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear with rows that do not depend on the other rows (batch invariance), on CPU fp32.

    MKL's sgemm sums a product with few rows in an order that depends on the row count (a
    single row takes a matrix-vector kernel), so the same sample could give other numbers in
    another batch. With the rows padded to at least 32 and to a multiple of 16, every row takes
    the same kernel path whatever the batch and its place in it (checked over row counts, row
    offsets, widths from 64 to 5120, one and two threads: `tests/nets/test_layers.py`).
    When a graph is recorded (training) the padded rows run as a 1x1 convolution instead, whose
    oneDNN forward and backward kernels are about 10% faster than sgemm on the training shapes;
    when sampling, sgemm is faster (9% on a Stable-Diffusion-shaped U-Net's forward pass,
    `benchmarks/diffusers_speed.py`). Elsewhere (GPU, autocast, compile) it is plain F.linear.

    Args:
        x: (..., in_features).
        weight: (out_features, in_features).
        bias: (out_features,) or None.
    Returns:
        (..., out_features).
    """
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or not x.numel()
        or torch.is_autocast_enabled("cpu")
        or torch.compiler.is_compiling()
    ):
        return F.linear(x, weight, bias)
    k, n = x.shape[-1], weight.shape[0]
    flat = x.reshape(-1, k)
    rows = flat.shape[0]
    padded = max(32, -(-rows // 16) * 16)
    if padded != rows:
        flat = torch.cat([flat, flat.new_zeros(padded - rows, k)])
    if not torch.is_grad_enabled():
        out = F.linear(flat, weight, bias)  # (padded, n)
    else:
        # (R, k) rows -> (16, k, 1, R/16) channels_last image; a batch of 16 or more makes
        # PyTorch pick oneDNN for 1x1 kernels even on one thread.
        img = flat.reshape(16, 1, padded // 16, k).permute(0, 3, 1, 2)
        out = F.conv2d(img, weight.view(n, k, 1, 1), bias)  # (16, n, 1, R/16) channels_last
        out = out.permute(0, 2, 3, 1).reshape(padded, n)
    return out[:rows].reshape(*x.shape[:-1], n)


def batch_invariant(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """fn(x) with the batch padded, on the CPU, to a multiple of max(2, threads) samples.

    oneDNN takes another kernel for a batch of one, and on several threads its transposed
    convolutions and PyTorch's channels_last GroupNorm split a sample between threads when the
    batch does not divide among them, each with another summation order. With whole samples
    per thread, a sample's result does not depend on the batch it is in. Padding rows repeat
    the last sample and are dropped.
    """
    return fn(pad_batch(x, invariant_batch_size(x.shape[0], x.device)))[: x.shape[0]]


def pad_batch(x: Tensor, size: int) -> Tensor:
    """x with its last sample repeated up to `size` samples (x itself when it has them)."""
    if x.shape[0] >= size:
        return x
    return torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])


def invariant_batch_size(n: int, device: torch.device | str) -> int:
    """The batch `batch_invariant` runs n samples as (n itself off the CPU)."""
    if torch.device(device).type != "cpu":
        return n
    unit = max(2, torch.get_num_threads())
    return -(-n // unit) * unit


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict) that normalises channels_last CPU inputs
    in contiguous (B, C, H, W) memory and hands back channels_last.

    PyTorch's CPU GroupNorm kernel for channels_last inputs runs 3-8x slower than its
    contiguous kernel at U-Net feature sizes (e.g. 0.63 ms vs 0.08 ms for (4, 64, 16, 16) on one
    thread); the two layout copies cost far less than the difference. The contiguous kernel
    reduces each (sample, group) in one thread, so a sample's result does not depend on its
    batch. Used when no graph is recorded (sampling); training keeps PyTorch's kernel, so that
    recorded training runs repeat exactly.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, ...) -> (B, C, ...) in the memory format of x."""
        if (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling()
        ):
            out = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return out.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state dict) whose forward uses `linear`."""

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) -> (..., out_features)."""
        return linear(x, self.weight, self.bias)


# --------------------------------------------------------------------------------------------
# Noise-level embeddings
# --------------------------------------------------------------------------------------------


def sinusoidal_embedding(
    c_noise: Tensor,
    dim: int,
    *,
    max_period: float = 10000.0,
    scale: float = 1.0,
    freq_shift: float = 0.0,
    sin_first: bool = False,
) -> Tensor:
    """Transformer positional features of a scalar per sample (Vaswani et al. 2017, sec. 3.5;
    used for diffusion time by DDPM and ADM).

    emb = [cos(s c f_0), ..., cos(s c f_{h-1}), sin(s c f_0), ..., sin(s c f_{h-1})] with
    f_i = max_period^(-i/(h - freq_shift)), h = dim/2. With the default frequencies (1 down to
    1e-4) both c = 1000 t (or a DDPM index in [0, 999]) and c = ln(sigma)/4 in about [-2, 2] get
    distinct features (EDM uses the latter with exactly these frequencies); `scale` stretches a
    small range.

    Args:
        c_noise: (B,) noise level code, any float range.
        dim: even feature size.
        max_period: the longest period, 2 pi max_period.
        scale: multiplier applied to c_noise first.
        freq_shift: shortens the frequency ladder's denominator (1 in DDPM's original code,
            which diffusers calls `freq_shift`; 0 in ADM, DiT and Stable Diffusion).
        sin_first: order [sin, cos] (DDPM's original code) instead of [cos, sin].
    Returns:
        (B, dim) float32 features.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding size must be even, got dim={dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, device=c_noise.device, dtype=torch.float32)
        / (half - freq_shift)
    )
    args = (c_noise.float() * scale)[:, None] * freqs[None]  # (B, half)
    if sin_first:
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of c_noise followed by a two-layer SiLU MLP (DDPM / DiT style).

    Args:
        freq_dim: size of the sinusoidal features.
        dim: output size.
        max_period, scale, freq_shift, sin_first: see `sinusoidal_embedding`.
    """

    def __init__(
        self,
        freq_dim: int,
        dim: int,
        *,
        max_period: float = 10000.0,
        scale: float = 1.0,
        freq_shift: float = 0.0,
        sin_first: bool = False,
    ) -> None:
        super().__init__()
        self.freq_dim, self.max_period, self.scale = freq_dim, max_period, scale
        self.freq_shift, self.sin_first = freq_shift, sin_first
        self.fc1 = Linear(freq_dim, dim)
        self.fc2 = Linear(dim, dim)

    def forward(self, c_noise: Tensor) -> Tensor:
        """(B,) -> (B, dim)."""
        f = sinusoidal_embedding(
            c_noise,
            self.freq_dim,
            max_period=self.max_period,
            scale=self.scale,
            freq_shift=self.freq_shift,
            sin_first=self.sin_first,
        )
        return self.fc2(F.silu(self.fc1(f.to(self.fc1.weight.dtype))))


# --------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------


def _sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """(N,) positions -> (N, dim) [sin, cos] features with periods up to 2 pi 10^4."""
    omega = 1.0 / 10000 ** (
        torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2)
    )
    out = pos.double()[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_1d(n: int, dim: int, *, device: torch.device | str | None = None) -> Tensor:
    """Fixed 1-D sine-cosine positions 0..n-1 (Vaswani et al. 2017, sec. 3.5), e.g. frame indices.

    Returns:
        (n, dim) float32.
    """
    if dim % 2:
        raise ValueError(f"1-D sin-cos positions need an even width, got {dim}")
    return _sincos_1d(torch.arange(n, device=device), dim).float()


def sincos_2d(
    h: int, w: int, dim: int, *, device: torch.device | str | None = None, scale: float = 1.0
) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE / DiT): half the channels encode the row,
    half the column.

    Args:
        h, w: token grid size.
        dim: embedding size, a multiple of 4.
        scale: multiplies the integer positions (PixArt's 1 / interpolation_scale).
    Returns:
        (h * w, dim) float32, row-major over the grid.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    rows = torch.arange(h, device=device).repeat_interleave(w) * scale  # (h*w,) row per token
    cols = torch.arange(w, device=device).repeat(h) * scale  # (h*w,) column per token
    return torch.cat([_sincos_1d(cols, dim // 2), _sincos_1d(rows, dim // 2)], dim=1).float()


def rope_2d(
    h: int,
    w: int,
    head_dim: int,
    *,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Axial 2-D rotary position angles (RoFormer, Su et al. 2021; 2-D split as in FLUX).

    The first half of each head's channels rotates with the row index, the second half with the
    column index; channel pairs are (2i, 2i+1).

    Args:
        h, w: token grid size.
        head_dim: channels per head, a multiple of 4.
        theta: base of the frequency ladder.
    Returns:
        (cos, sin), each (h * w, head_dim / 2) float32.
    """
    if head_dim % 4:
        raise ValueError(f"2-D rotary positions need a head size divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    rows = torch.arange(h, device=device).repeat_interleave(w).double()  # (N,)
    cols = torch.arange(w, device=device).repeat(h).double()  # (N,)
    angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=1)  # (N, head_dim/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of `x` by the given angles.

    Args:
        x: (B, H, N, head_dim).
        cos, sin: (N, head_dim / 2).
    Returns:
        (B, H, N, head_dim), same dtype as x.
    """
    xr = x.float().unflatten(-1, (-1, 2))  # (B, H, N, head_dim/2, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def key_padding_mask(mask: Tensor) -> Tensor:
    """A (B, L) keep-mask (True = attend) as a (B, 1, 1, L) boolean SDPA mask.

    A sample whose tokens are all masked would get NaN from the softmax; such rows attend to
    every token instead (a computed choice that needs no host synchronisation).
    """
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask[:, None, None, :]


def context_lengths(mask: Tensor | None, context: Tensor) -> list[int] | None:
    """Each row's token count when `mask` (B, L) keeps a prefix of every row of `context`
    (text padded at the end), else None (also when compiling or on the meta device); [] when
    there is no mask: every row has all L tokens. A row with no token kept counts as all L (as
    `key_padding_mask` does)."""
    if torch.compiler.is_compiling() or context.device.type == "meta":
        return None
    if mask is None:
        return []
    mask = mask.bool()
    counts = mask.sum(dim=1)
    prefix = torch.arange(mask.shape[1], device=mask.device) < counts[:, None]
    if not bool((prefix == mask).all()):
        return None
    return [int(n) or context.shape[1] for n in counts.tolist()]


def attention_by_length(q: Tensor, k: Tensor, v: Tensor, lengths: list[int]) -> Tensor:
    """Attention of each row over its first lengths[row] keys only, the rows of one length in
    one call. A row's result is then the same whatever the padding of the batch it is in, so
    prompts of different token lengths can share a sampling call (`step_batching`) and still
    give the pixels they give alone. Empty `lengths`: every row over all its keys.

    Args:
        q: (B, heads, N, d); k, v: (B, heads, L, d).
    Returns:
        (B, heads, N, d).
    """
    if not lengths:
        lengths = [k.shape[2]] * q.shape[0]
    out = q.new_empty(q.shape)
    for n in sorted(set(lengths)):
        rows = torch.tensor([i for i, m in enumerate(lengths) if m == n], device=q.device)
        out[rows] = F.scaled_dot_product_attention(q[rows], k[rows, :, :n], v[rows, :, :n])
    return out


def _heads(t: Tensor, heads: int) -> Tensor:
    """(B, N, D) -> (B, heads, N, D / heads) view."""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    """(B, heads, N, d) -> (B, N, heads * d); free when SDPA returned a (B, N, heads, d) buffer."""
    return t.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    Args:
        dim: token width.
        heads: number of heads; must divide dim.
        qk_norm: RMS-normalise queries and keys per head (SD3, ViT-22B) for stability.
        qkv_bias: give the QKV projection a bias (Stable Diffusion's transformer blocks have
            none).
    """

    def __init__(
        self, dim: int, heads: int, *, qk_norm: bool = False, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        hd = dim // heads
        self.q_norm = nn.RMSNorm(hd, eps=1e-6) if qk_norm else None
        self.k_norm = nn.RMSNorm(hd, eps=1e-6) if qk_norm else None

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) -> q, k, v each (B, heads, N, D / heads), normalised if configured."""
        qkv = self.qkv(x)  # (B, N, 3 D)
        # Split (not unbind) so that the backward pass concatenates the three gradients
        # straight into the (B, N, 3 D) layout of the projection's output: one copy, not two.
        q, k, v = (_heads(t, self.heads) for t in qkv.chunk(3, dim=-1))  # (B, heads, N, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Args: x (B, N, D); rope: optional (cos, sin) each (N, head_dim/2). Returns (B, N, D)."""
        q, k, v = self.project(x)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Multi-head attention from tokens to a context sequence, with a key padding mask.

    Args:
        dim: query token width.
        context_dim: context token width.
        heads: number of heads; must divide dim.
        qk_norm: RMS-normalise queries and keys per head.
        qkv_bias: give the query and key-value projections a bias.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        *,
        qk_norm: bool = False,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads, self.context_dim = heads, context_dim
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(context_dim, 2 * dim, bias=qkv_bias)
        self._kv: tuple | None = None  # (scope, context, weight key, keys and values)
        self.proj = Linear(dim, dim)
        hd = dim // heads
        self.q_norm = nn.RMSNorm(hd, eps=1e-6) if qk_norm else None
        self.k_norm = nn.RMSNorm(hd, eps=1e-6) if qk_norm else None

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            x: (B, N, dim) queries.
            context: (B, L, context_dim).
            mask: optional (B, L) bool, True = attend.
        Returns:
            (B, N, dim).
        """
        q = _heads(self.q(x), self.heads)  # (B, heads, N, hd)
        k, v = (_heads(t, self.heads) for t in self._keys_values(context).chunk(2, dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        lengths = None if torch.is_grad_enabled() else context_lengths(mask, context)
        if lengths is not None:  # sampling: each row over its own tokens, padding never seen
            return self.proj(_merge(attention_by_length(q, k, v, lengths)))
        attn_mask = None if mask is None else key_padding_mask(mask)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)))

    def _keys_values(self, context: Tensor) -> Tensor:
        """kv(context) (B, L, 2 dim), reused inside a `constant_context` scope (see there)."""
        scope = _scope_id()
        if not scope or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.kv(context)
        w, b = self.kv.weight, self.kv.bias
        key = (w.data_ptr(), w._version, None if b is None else b._version)
        cached = self._kv
        if (
            cached is not None
            and cached[0] == scope
            and cached[1] is context  # the same tensor object; it is kept alive by the cache
            and cached[2] == key
        ):
            return cached[3]
        kv = self.kv(context)
        self._kv = (scope, context, key, kv)
        return kv


class JointAttention(nn.Module):
    """MMDiT joint attention (SD3, Esser et al. 2024; FLUX double-stream blocks): text and image
    tokens keep separate projections but attend over the concatenated sequence [text, image].

    Args:
        dim: width of both streams.
        heads: number of heads.
        qk_norm: RMS-normalise queries and keys per head and stream.
        context_out: give the text stream an output projection (False in the last block).
    """

    def __init__(
        self, dim: int, heads: int, *, qk_norm: bool = False, context_out: bool = True
    ) -> None:
        super().__init__()
        self.heads = heads
        self.x_attn = SelfAttention(dim, heads, qk_norm=qk_norm)
        self.c_attn = SelfAttention(dim, heads, qk_norm=qk_norm)
        if not context_out:
            self.c_attn.proj = None

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Args:
            x: (B, N, D) image tokens.
            c: (B, L, D) text tokens.
            mask: optional (B, L) keep-mask of the text tokens (image tokens are always kept).
            rope: optional (cos, sin) for the image tokens, each (N, head_dim/2).
        Returns:
            (image update (B, N, D), text update (B, L, D) or None without a text output).
        """
        qx, kx, vx = self.x_attn.project(x)
        qc, kc, vc = self.c_attn.project(c)
        if rope is not None:
            qx, kx = apply_rope(qx, *rope), apply_rope(kx, *rope)
        L = c.shape[1]
        q = torch.cat([qc, qx], dim=2)  # (B, heads, L + N, hd)
        k = torch.cat([kc, kx], dim=2)
        v = torch.cat([vc, vx], dim=2)
        attn_mask = None
        if mask is not None:
            keep = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
            attn_mask = key_padding_mask(torch.cat([mask.bool(), keep], dim=1))
        o = _merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))  # (B, L+N, D)
        ox = self.x_attn.proj(o[:, L:])
        oc = self.c_attn.proj(o[:, :L]) if self.c_attn.proj is not None else None
        return ox, oc


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> GELU (tanh approximation, as DiT) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim)."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


# --------------------------------------------------------------------------------------------
# Images <-> tokens
# --------------------------------------------------------------------------------------------


def patchify(x: Tensor, p: int) -> Tensor:
    """Cut an image into non-overlapping p x p patches, row-major.

    Args:
        x: (B, C, H, W) with H and W divisible by p.
        p: patch size.
    Returns:
        (B, H/p * W/p, C * p * p), each patch flattened in (C, p, p) order.
    """
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"patch size {p} does not divide the input size {H}x{W}")
    x = x.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, p, w, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def unpatchify(tokens: Tensor, p: int, h: int, w: int) -> Tensor:
    """Inverse of `patchify`.

    Args:
        tokens: (B, h * w, C * p * p).
        p: patch size.
        h, w: token grid size.
    Returns:
        (B, C, h * p, w * p).
    """
    B, N, D = tokens.shape
    C = D // (p * p)
    x = tokens.reshape(B, h, w, C, p, p)  # (B, h, w, C, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(B, C, h * p, w * p)


def patchify_3d(x: Tensor, pt: int, p: int) -> Tensor:
    """Cut a clip into non-overlapping pt x p x p space-time patches, frame-major.

    Args:
        x: (B, C, T, H, W) with T divisible by pt and H, W by p.
        pt, p: temporal and spatial patch size.
    Returns:
        (B, T/pt * H/p * W/p, C * pt * p * p), each patch flattened in (C, pt, p, p) order.
    """
    B, C, T, H, W = x.shape
    if T % pt or H % p or W % p:
        raise ValueError(
            f"patch size {pt}x{p}x{p} does not divide the clip size {T}x{H}x{W} (frames x H x W)"
        )
    x = x.reshape(B, C, T // pt, pt, H // p, p, W // p, p)  # (B, C, t, pt, h, p, w, p)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, t, h, w, C, pt, p, p)
    return x.reshape(B, (T // pt) * (H // p) * (W // p), C * pt * p * p)


def unpatchify_3d(tokens: Tensor, pt: int, p: int, t: int, h: int, w: int) -> Tensor:
    """Inverse of `patchify_3d`: (B, t * h * w, C * pt * p * p) -> (B, C, t pt, h p, w p)."""
    B, N, D = tokens.shape
    C = D // (pt * p * p)
    x = tokens.reshape(B, t, h, w, C, pt, p, p)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, t, pt, h, p, w, p)
    return x.reshape(B, C, t * pt, h * p, w * p)


# --------------------------------------------------------------------------------------------
# Convolution kernels
# --------------------------------------------------------------------------------------------


def _fold_3tap(w: Tensor, dim: int) -> Tensor:
    """Taps [w0, w1, w2] along `dim` -> [w2, w1 + w2, w0 + w1, w0] (see conv3x3_upsample2x)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w2, w1 + w2, w0 + w1, w0], dim=dim)


def upsample_kernel(weight: Tensor) -> Tensor:
    """The transposed-convolution kernel of `conv3x3_upsample2x` for a 3x3 kernel.

    Args:
        weight: (K, C, 3, 3).
    Returns:
        (C, K, 4, 4) in channels_last memory (oneDNN's layout: reordering a plain kernel on
        every call costs more than the convolution itself at small feature maps).
    """
    w4 = _fold_3tap(_fold_3tap(weight, 2), 3)  # (K, C, 4, 4)
    return w4.transpose(0, 1).contiguous(memory_format=torch.channels_last)


def conv3x3_upsample2x(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, kernel: Tensor | None = None
) -> Tensor:
    """conv3x3(nearest_upsample_2x(x)) computed as one stride-2 transposed convolution.

    Output row 2i+a of the upsampled convolution reads input rows {i-1, i} (a = 0) with taps
    {w0, w1 + w2}, or {i, i+1} (a = 1) with taps {w0 + w1, w2}; a transposed convolution with
    stride 2, padding 1 and the 4-tap kernel [w2, w1 + w2, w0 + w1, w0] (per axis) produces exactly
    these sums. Each output then costs 4 multiply-adds per input channel instead of 9, and the
    4x larger upsampled tensor is never built.

    Args:
        x: (B, C, H, W).
        weight: (K, C, 3, 3) kernel of the 3x3 convolution (padding 1).
        bias: (K,) or None.
        kernel: `upsample_kernel(weight)` when the caller keeps it (sampling); else computed.
    Returns:
        (B, K, 2H, 2W), equal to
        F.conv2d(F.interpolate(x, scale_factor=2), weight, bias, padding=1).
    """
    if kernel is None:  # training: the folded kernel as a view, differentiable
        kernel = _fold_3tap(_fold_3tap(weight, 2), 3).transpose(0, 1)  # (C, K, 4, 4)
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)
