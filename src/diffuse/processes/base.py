"""The noise-process interface and the one `add_noise`.

Every Gaussian process writes x_t = alpha(t) * x0 + sigma(t) * eps. Dividing by alpha gives the
single axis the samplers work on: x = x0 + level * eps with level = sigma / alpha.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor


def broadcast_to(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values of shape [B] (or a scalar) to broadcast against `like` [B, ...]."""
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def as_f64(t: Tensor | float) -> Tensor:
    """`t` as a float64 tensor: the processes compute their schedules in double precision."""
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseProcess(abc.ABC):
    """A forward process x_t = alpha(t) x0 + sigma(t) eps, with its training choices.

    Subclasses are frozen dataclasses. `t` is the process's own time variable (a DDPM index, a
    continuous time in [0, 1], or sigma itself for EDM); `level` is sigma / alpha.
    """

    @abc.abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale alpha(t)."""

    @abc.abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale sigma(t)."""

    def level(self, t: Tensor) -> Tensor:
        """Noise level sigma(t) / alpha(t) on the shared sampler axis."""
        return self.sigma(t) / self.alpha(t)

    @abc.abstractmethod
    def t_from_level(self, level: Tensor) -> Tensor:
        """Inverse of `level`: the process time whose noise level is `level`."""

    def alpha_from_level(self, level: Tensor) -> Tensor:
        """alpha at the time whose noise level is `level` (x_t = alpha * x on the level axis)."""
        return self.alpha(self.t_from_level(level))

    @abc.abstractmethod
    def c_noise(self, t: Tensor) -> Tensor:
        """The scalar the network is conditioned on at time t."""

    @abc.abstractmethod
    def t_from_uniform(self, u: Tensor) -> Tensor:
        """The training density's quantile function: the time at cumulative probability u."""

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw n training times from the process's training density (float64, CPU)."""
        return self.t_from_uniform(torch.rand(n, generator=generator, dtype=torch.float64))

    @abc.abstractmethod
    def loss_weight(self, level: Tensor) -> Tensor:
        """The recommended weight of the squared x0 error at this noise level."""

    @property
    @abc.abstractmethod
    def level_min(self) -> float:
        """Smallest noise level a sampler should visit before the final jump to zero."""

    @property
    @abc.abstractmethod
    def level_max(self) -> float:
        """Noise level of pure noise at the start of sampling."""

    @property
    @abc.abstractmethod
    def t_min(self) -> float:
        """The time of `level_min`."""

    @property
    @abc.abstractmethod
    def t_max(self) -> float:
        """The time of `level_max`."""

    def alpha_sigma_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """d alpha / dt and d sigma / dt at t (used by velocity prediction).

        The default differentiates `alpha` and `sigma` with autograd; processes with a simple
        closed form override it.
        """
        with torch.enable_grad():
            tt = t.detach().to(torch.float64).clone().requires_grad_(True)
            derivatives = []
            for value in (self.alpha(tt), self.sigma(tt)):
                if value.requires_grad:  # a constant (alpha = 1 for VE) has no graph
                    (grad,) = torch.autograd.grad(value.sum(), tt)
                else:
                    grad = torch.zeros_like(tt)
                derivatives.append(grad.detach())
        return derivatives[0], derivatives[1]

    def initial_std(self, level: float) -> float:
        """Std of the noise generation starts from at `level` on the level axis.

        `level` itself (VE and EDM sample x = level_max * eps); a variance-preserving process
        overrides it with sqrt(1 + level^2), see `VariancePreserving`.
        """
        return level

    @property
    def final_level(self) -> float:
        """The level sampling stops at: 0 (the clean estimate) unless a process says
        otherwise (`DiscreteVP.stop_at_first_timestep`)."""
        return 0.0

    def prior_std(self) -> float:
        """Std of x at level_max on the level axis, for unit data: sqrt(1 + level_max^2)."""
        return math.sqrt(1.0 + self.level_max**2)


def add_noise(process: NoiseProcess, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Forward process sample x_t = alpha(t) x0 + sigma(t) noise.

    Args:
        process: the noise process.
        x0: clean data [B, ...].
        t: per-sample times [B] (or a scalar).
        noise: standard normal noise shaped like x0.
    Returns:
        x_t shaped like x0.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    t = torch.as_tensor(t, dtype=torch.float64)
    alpha = broadcast_to(process.alpha(t), x0)
    sigma = broadcast_to(process.sigma(t), x0)
    return alpha * x0 + sigma * noise


class VariancePreserving:
    """Mixin of the variance-preserving processes (alpha^2 + sigma^2 = 1: DDPM, DDIM, Stable
    Diffusion, the cosine schedule).

    Their generation starts from x_T ~ N(0, I) at the top time (Ho et al. 2020, Alg. 2), which
    on the level axis x = x_T / alpha has std 1 / alpha = sqrt(1 + level^2), not `level`: the
    start diffusers' schedulers use (0.2% above `level` at Stable Diffusion's top level 14.6).
    """

    def initial_std(self, level: float) -> float:
        """sqrt(1 + level^2): the std of x_T / alpha for x_T ~ N(0, I)."""
        return math.sqrt(1.0 + level * level)
