"""The absorbing-state (masking) forward process of masked diffusion language models.

Each token of a clean sequence x0 is independently replaced by the mask token with probability
1 - alpha(t), t in [0, 1], alpha decreasing from alpha(0) = 1 (clean) to alpha(1) = 0 (all
masked); a masked token stays masked as t grows (Austin et al. 2021, D3PM absorbing state;
Sahoo et al. 2024, MDLM, Sec. 3).

    schedule = MaskSchedule("cosine")
    t = antithetic_times(batch, generator)
    x_t, masked = mask_tokens(x0, schedule.alpha(t), mask_id, generator)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["SCHEDULES", "MaskSchedule", "antithetic_times", "mask_tokens"]

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class MaskSchedule:
    """A noise schedule alpha(t): the probability that a token is still unmasked at time t.

    linear: alpha(t) = 1 - t. cosine: alpha(t) = cos(pi t / 2) (MDLM's cosine schedule in the
    alpha form; it masks more slowly at the start).

    Args:
        kind: "linear" or "cosine".
    """

    kind: Literal["linear", "cosine"] = "linear"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"mask schedule must be one of {list(SCHEDULES)}, got {self.kind!r}")

    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t), elementwise, for t in [0, 1]."""
        if self.kind == "linear":
            return 1.0 - t
        return torch.cos(0.5 * math.pi * t)

    def alpha_derivative(self, t: Tensor) -> Tensor:
        """d alpha / dt (negative), elementwise."""
        if self.kind == "linear":
            return -torch.ones_like(t)
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def elbo_weight(self, t: Tensor) -> Tensor:
        """The continuous-time ELBO weight -alpha'(t) / (1 - alpha(t)) (MDLM, Eq. 10).

        linear: 1 / t. cosine: (pi/2) sin(pi t/2) / (1 - cos(pi t/2)). Both grow like 1/t as
        t -> 0, where the expected number of masked tokens shrinks like t, so their product
        stays bounded.
        """
        if self.kind == "linear":
            return 1.0 / t
        half = 0.5 * math.pi * t
        # 1 - cos(x) = 2 sin^2(x/2), without the cancellation of 1 - cos for small x
        return 0.5 * math.pi * torch.sin(half) / (2.0 * torch.sin(0.5 * half) ** 2)


def antithetic_times(n: int, generator: torch.Generator | None = None) -> Tensor:
    """n times in (0, 1], stratified: t_i = 1 - ((u + i / n) mod 1) with one uniform u.

    MDLM's low-discrepancy sampler (Sahoo et al. 2024, Sec. 3.5): every time is marginally
    uniform, so the loss stays an unbiased ELBO estimate, while the batch covers [0, 1] evenly
    and the variance of the batch mean drops. `1 - frac` keeps t away from exactly 0.

    Args:
        n: number of times.
        generator: the random source (CPU generator).
    Returns:
        [n] float32 times in (0, 1], in random order of the strata.
    """
    u = torch.rand((), generator=generator)
    frac = torch.remainder(u + torch.arange(n, dtype=torch.float64) / n, 1.0)
    return (1.0 - frac).float()


def mask_tokens(
    x0: Tensor, alpha: Tensor, mask_id: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Sample x_t ~ q(x_t | x0): each token masked independently with probability 1 - alpha.

    Args:
        x0: clean tokens [B, L] (int64).
        alpha: [B] the probability of staying unmasked, per sequence.
        mask_id: the mask token's id.
        generator: the random source (draws on the CPU, so a seed gives the same masks on any
            device).
    Returns:
        (x_t [B, L], masked [B, L] bool).
    """
    u = torch.rand(x0.shape, generator=generator).to(x0.device)
    masked = u >= alpha.to(x0.device)[:, None]  # P(masked) = 1 - alpha
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked
