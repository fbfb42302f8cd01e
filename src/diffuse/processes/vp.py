"""Variance-preserving processes: discrete DDPM schedules and the continuous cosine schedule.

VP means alpha^2 + sigma^2 = 1, so alpha = 1 / sqrt(1 + level^2) for every VP process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from diffuse.processes.base import NoiseProcess, VariancePreserving, as_f64

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class DiscreteVP(VariancePreserving, NoiseProcess):
    """DDPM with a discrete beta schedule (Ho et al. 2020; Rombach et al. 2022).

    `t` is the (possibly fractional) step index in [0, num_timesteps - 1]; between integer steps
    the log noise level is interpolated linearly, as k-diffusion does for DDPM models.

    Args:
        beta_schedule: "linear" (beta from beta_start to beta_end, DDPM), "scaled_linear"
            (sqrt(beta) linear, Stable Diffusion; defaults 0.00085 to 0.012) or
            "squaredcos_cap_v2" (the cosine schedule discretised, Nichol & Dhariwal 2021,
            eq. 17, each beta capped at 0.999; beta_start and beta_end unused).
        num_timesteps: number of discrete steps (1000 in both papers).
        zero_terminal_snr: rescale the schedule so the last step is pure noise (Lin et al.
            2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1).
            Its last bar-alpha is then 0; it is set to 2^-24 so that the top level stays finite
            (4096), as diffusers does.
        steps_offset: added to the timesteps of the "leading" schedule (diffusers'
            `steps_offset`; Stable Diffusion's models use 1).
        stop_at_first_timestep: generation (`pipelines.sample.generate`) ends at the noise
            level of timestep 0 instead of 0 and returns that (slightly noisy) sample, scaled
            by its alpha, as diffusers' DDIM and PNDM do with `set_alpha_to_one=False` (Stable
            Diffusion 1.x's configs); editing and inversion still end at 0.
    """

    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    num_timesteps: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None
    zero_terminal_snr: bool = False
    steps_offset: int = 0
    stop_at_first_timestep: bool = False

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got "
                f"{self.beta_schedule!r}"
            )
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")
        start, end = self._beta_range
        if not 0 < start < end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {start}, {end}")
        if not 0 <= self.steps_offset < self.num_timesteps:
            raise ValueError(
                f"steps_offset must be in [0, {self.num_timesteps}), got {self.steps_offset}"
            )

    @property
    def _beta_range(self) -> tuple[float, float]:
        default = (1e-4, 0.02) if self.beta_schedule == "linear" else (0.00085, 0.012)
        start = default[0] if self.beta_start is None else self.beta_start
        end = default[1] if self.beta_end is None else self.beta_end
        return start, end

    @cached_property
    def betas(self) -> Tensor:
        """The beta_t of each step, float64 [num_timesteps]."""
        start, end = self._beta_range
        n = self.num_timesteps
        if self.beta_schedule == "linear":
            return torch.linspace(start, end, n, dtype=torch.float64)
        if self.beta_schedule == "squaredcos_cap_v2":
            steps = torch.arange(n + 1, dtype=torch.float64) / n
            f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2  # bar-alpha at i / n
            return (1.0 - f[1:] / f[:-1]).clamp(max=0.999)
        return torch.linspace(math.sqrt(start), math.sqrt(end), n, dtype=torch.float64) ** 2

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """bar-alpha_t = prod (1 - beta), float64 [num_timesteps] (rescaled to a zero
        terminal SNR if asked, Lin et al. 2024, Algorithm 1)."""
        cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        if not self.zero_terminal_snr:
            return cumprod
        root = cumprod.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        # Shift so the last sqrt(bar-alpha) is 0, scale so the first keeps its value.
        root = (root - last) * first / (first - last)
        cumprod = root**2
        cumprod[-1] = 2.0**-24  # a finite top level; diffusers' choice
        return cumprod

    @cached_property
    def log_levels(self) -> Tensor:
        """log(sigma_t / alpha_t) of each integer step, increasing, float64."""
        ac = self.alphas_cumprod
        return 0.5 * torch.log((1.0 - ac) / ac)

    def _log_level(self, t: Tensor) -> Tensor:
        t = as_f64(t).clamp(0, self.num_timesteps - 1)
        lo = t.floor().clamp(max=self.num_timesteps - 2).long()
        w = t - lo
        return (1 - w) * self.log_levels[lo] + w * self.log_levels[lo + 1]

    def level(self, t: Tensor) -> Tensor:
        return torch.exp(self._log_level(t))

    def alpha(self, t: Tensor) -> Tensor:
        return torch.rsqrt(1.0 + self.level(t) ** 2)

    def sigma(self, t: Tensor) -> Tensor:
        level = self.level(t)
        return level * torch.rsqrt(1.0 + level**2)

    def alpha_from_level(self, level: Tensor) -> Tensor:
        return torch.rsqrt(1.0 + as_f64(level) ** 2)

    def t_from_level(self, level: Tensor) -> Tensor:
        """Fractional step index of `level`, clamped to the table's range."""
        log_level = torch.log(as_f64(level)).clamp(self.log_levels[0], self.log_levels[-1])
        table = self.log_levels
        hi = torch.searchsorted(table, log_level.reshape(-1)).clamp(1, len(table) - 1)
        lo = hi - 1
        w = (log_level.reshape(-1) - table[lo]) / (table[hi] - table[lo])
        return (lo + w).reshape(log_level.shape)

    def c_noise(self, t: Tensor) -> Tensor:
        return as_f64(t)

    def t_from_uniform(self, u: Tensor) -> Tensor:
        # Uniform over the integer steps 0 .. num_timesteps - 1.
        return torch.floor(as_f64(u) * self.num_timesteps).clamp(0, self.num_timesteps - 1)

    def loss_weight(self, level: Tensor) -> Tensor:
        # DDPM's "simple" loss is the unweighted eps MSE = x0 MSE / level^2.
        return 1.0 / as_f64(level) ** 2

    @property
    def level_min(self) -> float:
        return float(self.log_levels[0].exp())

    @property
    def level_max(self) -> float:
        return float(self.log_levels[-1].exp())

    @property
    def final_level(self) -> float:
        """level_min (timestep 0) with `stop_at_first_timestep`, else 0."""
        return self.level_min if self.stop_at_first_timestep else 0.0

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    def t_max(self) -> float:
        return float(self.num_timesteps - 1)


@dataclass(frozen=True)
class CosineVP(VariancePreserving, NoiseProcess):
    """Continuous-time VP with the cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    bar-alpha(t) = f(t) / f(0), f(t) = cos^2(pi/2 (t + s) / (1 + s)), t in [0, 1]. Sampling runs
    between `level_min` and `level_max` (the level at t=1 is infinite).
    """

    offset: float = 0.008
    sampling_level_min: float = 0.002
    sampling_level_max: float = 80.0

    def __post_init__(self) -> None:
        if not 0 <= self.offset < 1:
            raise ValueError(f"offset must be in [0, 1), got {self.offset}")
        if not 0 < self.sampling_level_min < self.sampling_level_max:
            raise ValueError(
                f"need 0 < sampling_level_min < sampling_level_max, got "
                f"{self.sampling_level_min}, {self.sampling_level_max}"
            )

    def _theta(self, t: Tensor) -> Tensor:
        return (as_f64(t) + self.offset) / (1 + self.offset) * (math.pi / 2)

    @property
    def _f0(self) -> float:
        return math.cos(self.offset / (1 + self.offset) * math.pi / 2) ** 2

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(self._theta(t)) / math.sqrt(self._f0)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt((1.0 - self.alpha(t) ** 2).clamp(min=0))

    def level(self, t: Tensor) -> Tensor:
        f = torch.cos(self._theta(t)) ** 2
        return torch.sqrt(((self._f0 - f) / f).clamp(min=0))

    def alpha_from_level(self, level: Tensor) -> Tensor:
        return torch.rsqrt(1.0 + as_f64(level) ** 2)

    def t_from_level(self, level: Tensor) -> Tensor:
        f = self._f0 / (1.0 + as_f64(level) ** 2)
        theta = torch.arccos(torch.sqrt(f))
        return theta * 2 / math.pi * (1 + self.offset) - self.offset

    def c_noise(self, t: Tensor) -> Tensor:
        return 1000.0 * as_f64(t)

    def t_from_uniform(self, u: Tensor) -> Tensor:
        return self.t_min + (self.t_max - self.t_min) * as_f64(u)

    def loss_weight(self, level: Tensor) -> Tensor:
        return 1.0 / as_f64(level) ** 2

    @property
    def level_min(self) -> float:
        return self.sampling_level_min

    @property
    def level_max(self) -> float:
        return self.sampling_level_max

    @property
    def t_min(self) -> float:
        return float(self.t_from_level(as_f64(self.sampling_level_min)))

    @property
    def t_max(self) -> float:
        return float(self.t_from_level(as_f64(self.sampling_level_max)))
