"""Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022; Esser et al. 2024).

x_t = (1 - t) x0 + t eps, so level = t / (1 - t). A time shift s maps t to s t / (1 + (s-1) t),
which multiplies the noise level by s (SD3, section 5.3.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuse.processes.base import NoiseProcess, as_f64


def resolution_shift(
    num_tokens: int,
    base_tokens: int = 256,
    max_tokens: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Resolution-dependent time shift exp(mu), mu linear in the token count (as in FLUX.1).

    Args:
        num_tokens: number of image tokens (latent patches) the model sees.
    Returns:
        the shift s >= 1 (more tokens need more noise to destroy the same information).
    """
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    mu = base_shift + slope * (num_tokens - base_tokens)
    return math.exp(mu)


def shift_time(t: Tensor, shift: float) -> Tensor:
    """Apply the time shift t -> s t / (1 + (s - 1) t)."""
    t = as_f64(t)
    return shift * t / (1 + (shift - 1) * t)


@dataclass(frozen=True)
class RectifiedFlow(NoiseProcess):
    """Rectified flow with logit-normal training times (SD3) and an optional time shift.

    Args:
        logit_mean, logit_std: training density t = sigmoid(N(logit_mean, logit_std^2)).
        shift: time shift applied to training times and to the default sampling range.
        t_edge: sampling starts at t = 1 - t_edge (level = (1 - t_edge) / t_edge * ...).
    """

    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    t_edge: float = 1e-3

    def __post_init__(self) -> None:
        if self.logit_std <= 0 or self.shift <= 0:
            raise ValueError(f"logit_std and shift must be > 0, got {self.logit_std}, {self.shift}")
        if not 0 < self.t_edge < 0.5:
            raise ValueError(f"t_edge must be in (0, 0.5), got {self.t_edge}")

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - as_f64(t)

    def sigma(self, t: Tensor) -> Tensor:
        return as_f64(t)

    def t_from_level(self, level: Tensor) -> Tensor:
        level = as_f64(level)
        return level / (1.0 + level)

    def alpha_sigma_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ones = torch.ones_like(as_f64(t))
        return -ones, ones

    def c_noise(self, t: Tensor) -> Tensor:
        return 1000.0 * as_f64(t)

    def t_from_uniform(self, u: Tensor) -> Tensor:
        t = torch.sigmoid(self.logit_mean + self.logit_std * torch.special.ndtri(as_f64(u)))
        return shift_time(t, self.shift).clamp(self.t_edge, 1 - self.t_edge)

    def loss_weight(self, level: Tensor) -> Tensor:
        # Unweighted velocity MSE: u error = x0 error / t, t = level / (1 + level).
        level = as_f64(level)
        return ((1.0 + level) / level) ** 2

    @property
    def t_min(self) -> float:
        return float(shift_time(as_f64(self.t_edge), self.shift))

    @property
    def t_max(self) -> float:
        return float(shift_time(as_f64(1 - self.t_edge), self.shift))

    @property
    def level_min(self) -> float:
        return self.t_min / (1 - self.t_min)

    @property
    def level_max(self) -> float:
        return self.t_max / (1 - self.t_max)
