"""Seeds and counter-based random streams: value i of a key's stream, for a whole batch at once.

Training draws each sample's time, noise, flip and label drop from the sample's own key, so a
sample's draws never depend on the batch, the rank or the device. A CPU generator per sample
does that in a Python loop of 3 small draws per sample; here value i of key k's stream is
the SplitMix64 output (Steele, Lea & Flood 2014) at state k + (i + 1) * gamma, computed with
wrapping int64 tensor arithmetic, so a batch costs a few vector operations on any device and the
same key gives the same bits everywhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, SplitMix64's increment
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_CPU_CHUNK = 1 << 18  # stream values per chunk of rows in `stream_normal`
_GPU_CHUNK = 1 << 24


def _as_int64(v: int) -> int:
    """The int64 with the same 64 bits as the unsigned value v."""
    return v - (1 << 64) if v >= 1 << 63 else v


def mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python integer (a bijection of 64-bit values)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def mix_seeds(*values: int) -> int:
    """Hash integers into one 63-bit seed (SplitMix64 chained over the values)."""
    h = _GAMMA
    for v in values:
        h = mix64((h ^ (int(v) & _MASK64)) + _GAMMA)
    return h >> 1


def _shift_right(x: Tensor, k: int) -> Tensor:
    """Logical right shift of the 64 bits held in an int64 tensor."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64_tensor(x: Tensor) -> Tensor:
    """`mix64` element-wise on an int64 tensor (its bits read as unsigned); x is overwritten."""
    shifted = torch.empty_like(x)
    for k, multiplier in ((30, _M1), (27, _M2), (31, None)):
        torch.bitwise_right_shift(x, k, out=shifted)
        x.bitwise_xor_(shifted.bitwise_and_((1 << (64 - k)) - 1))
        if multiplier is not None:
            x.mul_(_as_int64(multiplier))
    return x


def batch_keys(seed: int, first: int, count: int, device: torch.device | str = "cpu") -> Tensor:
    """Keys [count] (int64) of the items first .. first + count - 1 under the 63-bit `seed`."""
    index = torch.arange(first, first + count, dtype=torch.int64, device=device)
    return mix64_tensor(index ^ (seed & ((1 << 63) - 1)))


def stream_bits(keys: Tensor, count: int, offset: int = 0) -> Tensor:
    """Values offset .. offset + count - 1 of each key's stream: int64 [len(keys), count]."""
    steps = torch.arange(offset + 1, offset + count + 1, dtype=torch.int64, device=keys.device)
    return mix64_tensor(keys[:, None] + steps.mul_(_as_int64(_GAMMA)))


def stream_uniform(keys: Tensor, count: int, offset: int = 0) -> Tensor:
    """Uniforms in (0, 1) with 53 random bits (float64) from the keys' streams."""
    bits = _shift_right(stream_bits(keys, count, offset), 11)
    return (bits.double() + 0.5) * 2.0**-53


def stream_normal(
    keys: Tensor, shape: tuple[int, ...], offset: int = 0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normals [len(keys), *shape] from the keys' streams (Box-Muller, float32 math).

    Each stream value gives two normals from two 24-bit uniforms, so a sample of n values uses
    stream values offset .. offset + ceil(n / 2) - 1; tails reach 5.9 standard deviations.
    """
    n, pairs = math.prod(shape), (math.prod(shape) + 1) // 2
    z = torch.empty((len(keys), pairs, 2), dtype=torch.float32, device=keys.device)
    # Rows in chunks that stay in cache on a CPU (one chunk on a GPU at training sizes).
    rows = max(1, (_CPU_CHUNK if keys.device.type == "cpu" else _GPU_CHUNK) // pairs)
    for start in range(0, len(keys), rows):
        bits = stream_bits(keys[start : start + rows], pairs, offset)
        radius = _shift_right(bits, 40).float().add_(0.5).mul_(2.0**-24)  # u1 in (0, 1)
        radius.log_().mul_(-2.0).sqrt_()
        angle = bits.bitwise_and_(0xFFFFFF << 8).float().mul_(2.0 * math.pi * 2.0**-32)
        out = z[start : start + rows]
        torch.mul(torch.cos(angle), radius, out=out[..., 0])
        torch.mul(angle.sin_(), radius, out=out[..., 1])
    z = z.reshape(len(keys), -1)
    return (z if z.shape[1] == n else z[:, :n]).reshape(len(keys), *shape).to(dtype)
