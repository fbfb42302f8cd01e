"""Validation scores of the text models in bits per character.

The masked diffusion model's score is its negative ELBO (an upper bound on -log2 p(x)),
estimated by Monte Carlo over the diffusion time; the autoregressive model's is its exact
negative log-likelihood. Both score the same non-overlapping windows, every character of each
window (the first from no context), so the two numbers compare directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuse.text.masking import MaskSchedule
from diffuse.text.objectives import ar_nll, mdlm_elbo_at
from diffuse.text.transformer import TextTransformer

__all__ = ["BitsPerChar", "ar_bits_per_char", "mdlm_bound", "windows_of"]

LN2 = math.log(2.0)

# progress(done, total): called after each batch
ProgressFn = Callable[[int, int], object]


@dataclass(frozen=True)
class BitsPerChar:
    """A validation score.

    Attributes:
        bits_per_char: the mean score per character.
        standard_error: the Monte Carlo standard error of that mean (0 for an exact score).
        windows: windows scored.
        length: characters per window.
        times: diffusion times per window (0 for the autoregressive model).
    """

    bits_per_char: float
    standard_error: float
    windows: int
    length: int
    times: int = 0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready fields."""
        return {
            "bits_per_char": self.bits_per_char,
            "standard_error": self.standard_error,
            "windows": self.windows,
            "length": self.length,
            "times": self.times,
        }


def windows_of(tokens: Tensor, length: int, limit: int = 0) -> Tensor:
    """Non-overlapping windows [N, length] of a token sequence (a partial last one dropped).

    Args:
        tokens: [T] int64.
        length: window length (>= 1).
        limit: keep only the first `limit` windows (0: all).
    """
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    n = tokens.numel() // length
    if n == 0:
        raise ValueError(f"{tokens.numel()} tokens hold no window of {length}")
    if limit:
        n = min(n, limit)
    return tokens[: n * length].view(n, length)


@torch.no_grad()
def mdlm_bound(
    net: TextTransformer,
    windows: Tensor,
    schedule: MaskSchedule,
    times: int = 8,
    batch_size: int = 64,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> BitsPerChar:
    """The MDLM negative-ELBO bound in bits per character, with its Monte Carlo error.

    Each window gets `times` diffusion times in two independent halves; each half is stratified
    over [0, 1] with its own random offset, so either half alone is an unbiased estimate of the
    window's bound. The window's estimate is the mean of the two, and (e1 - e2)^2 / 4 is an
    unbiased estimate of its variance; summed over the (independent) windows this gives the
    standard error of the mean over windows (the Monte Carlo error; the validation text itself
    is fixed).

    Args:
        net: the bidirectional network (eval mode).
        windows: [N, L] validation windows.
        schedule: the model's alpha(t) (the bound holds for any schedule; it sets the variance).
        times: times per window (even, >= 2).
        batch_size: sequences per network call.
        seed: the random source of the times and masks (same seed, same estimate).
        progress: called with (done, total) sequences after each batch.
    Returns:
        the score.
    """
    if times < 2 or times % 2:
        raise ValueError(f"times must be even and >= 2, got {times}")
    n, length = windows.shape
    half = times // 2
    g = torch.Generator().manual_seed(seed)
    offsets = torch.rand(n, 2, generator=g, dtype=torch.float64)  # one per window and half
    strata = torch.arange(half, dtype=torch.float64) / half
    t = 1.0 - torch.remainder(offsets[:, :, None] + strata, 1.0)  # [N, 2, half] in (0, 1]
    jobs_t = t.reshape(-1).float()
    jobs_w = torch.arange(n).repeat_interleave(times)
    device = next(net.parameters()).device
    values = torch.empty(jobs_t.numel(), dtype=torch.float64)
    for start in range(0, jobs_t.numel(), batch_size):
        sl = slice(start, start + batch_size)
        x0 = windows[jobs_w[sl]].to(device)
        values[sl] = mdlm_elbo_at(net, x0, jobs_t[sl].to(device), schedule, g).double().cpu()
        if progress is not None:
            progress(min(start + batch_size, jobs_t.numel()), jobs_t.numel())
    per_half = values.view(n, 2, half).mean(dim=2)  # [N, 2] nats per window
    estimate = per_half.mean(dim=1)
    variance = ((per_half[:, 0] - per_half[:, 1]) ** 2 / 4).sum() / n**2
    scale = 1.0 / (length * LN2)
    return BitsPerChar(
        bits_per_char=float(estimate.mean()) * scale,
        standard_error=float(variance.sqrt()) * scale,
        windows=n,
        length=length,
        times=times,
    )


@torch.no_grad()
def ar_bits_per_char(
    net: TextTransformer,
    windows: Tensor,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> BitsPerChar:
    """The autoregressive model's exact negative log-likelihood in bits per character.

    Args:
        net: the causal network (eval mode).
        windows: [N, L] validation windows.
        batch_size: windows per network call.
        progress: called with (done, total) windows after each batch.
    Returns:
        the score (standard error 0: nothing is sampled).
    """
    n, length = windows.shape
    device = next(net.parameters()).device
    total = 0.0
    for start in range(0, n, batch_size):
        total += float(ar_nll(net, windows[start : start + batch_size].to(device)).double().sum())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return BitsPerChar(total / (n * length * LN2), 0.0, n, length)
