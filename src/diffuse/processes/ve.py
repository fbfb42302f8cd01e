"""Variance-exploding processes: VE SDE (Song et al. 2021) and EDM (Karras et al. 2022).

Both have alpha = 1, so the noise level is sigma itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuse.processes.base import NoiseProcess, as_f64


class _AlphaOne(NoiseProcess):
    """Shared algebra of processes with alpha = 1 (level = sigma)."""

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(as_f64(t))

    def level(self, t: Tensor) -> Tensor:
        return self.sigma(t)

    def alpha_from_level(self, level: Tensor) -> Tensor:
        return torch.ones_like(as_f64(level))


@dataclass(frozen=True)
class VE(_AlphaOne):
    """VE SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1] (Song et al. 2021).

    Training draws t uniformly (log-uniform sigma) and weights the x0 error by 1 / sigma^2, the
    score-matching weight lambda = sigma^2 of the paper.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** as_f64(t)

    def t_from_level(self, level: Tensor) -> Tensor:
        return torch.log(as_f64(level) / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def c_noise(self, t: Tensor) -> Tensor:
        return torch.log(0.5 * self.sigma(t))

    def t_from_uniform(self, u: Tensor) -> Tensor:
        return as_f64(u)

    def loss_weight(self, level: Tensor) -> Tensor:
        return 1.0 / as_f64(level) ** 2

    @property
    def level_min(self) -> float:
        return self.sigma_min

    @property
    def level_max(self) -> float:
        return self.sigma_max

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return 1.0


@dataclass(frozen=True)
class EDM(_AlphaOne):
    """EDM (Karras et al. 2022, Table 1): t = sigma, ln(sigma) ~ N(P_mean, P_std^2) in training.

    The loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 makes the
    effective network-output loss unit-weighted under EDM preconditioning.
    """

    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self) -> None:
        if self.sigma_data <= 0 or self.p_std <= 0:
            raise ValueError(
                f"sigma_data and p_std must be > 0, got {self.sigma_data}, {self.p_std}"
            )
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )

    def sigma(self, t: Tensor) -> Tensor:
        return as_f64(t)

    def t_from_level(self, level: Tensor) -> Tensor:
        return as_f64(level)

    def c_noise(self, t: Tensor) -> Tensor:
        return torch.log(as_f64(t)) / 4

    def t_from_uniform(self, u: Tensor) -> Tensor:
        return torch.exp(self.p_mean + self.p_std * torch.special.ndtri(as_f64(u)))

    def loss_weight(self, level: Tensor) -> Tensor:
        s = as_f64(level)
        return (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2

    @property
    def level_min(self) -> float:
        return self.sigma_min

    @property
    def level_max(self) -> float:
        return self.sigma_max

    @property
    def t_min(self) -> float:
        return self.sigma_min

    @property
    def t_max(self) -> float:
        return self.sigma_max
