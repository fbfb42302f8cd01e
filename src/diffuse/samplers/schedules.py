"""Noise-level schedules: functions returning a 1-D float64 tensor of steps + 1 levels ending in 0.

Every schedule has the signature `schedule(process, steps, *, level_min=None, level_max=None,
**options)`; the range defaults to the process's sampling range (`process.level_min`,
`process.level_max`). The levels decrease strictly; the final 0 is the jump to the denoised
estimate, so `steps` is also the number of sampler steps (one denoiser call each for one-call
samplers).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from diffuse.processes.base import NoiseProcess
from diffuse.processes.flow import RectifiedFlow
from diffuse.processes.vp import DiscreteVP

Spacing = Literal["linspace", "trailing", "leading"]
SPACINGS: tuple[str, ...] = ("linspace", "trailing", "leading")


def check_range(
    process: NoiseProcess | None,
    steps: int,
    level_min: float | None,
    level_max: float | None,
) -> tuple[float, float]:
    """Validate a schedule's arguments and fill the range from the process.

    Returns:
        (level_min, level_max) as floats.
    Raises:
        ValueError: steps below 1 or not an integer, a missing range, a level that is not a
            finite positive number, or level_min not below level_max (showing the values).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if level_min is None or level_max is None:
        if process is None:
            raise ValueError("give a process or both level_min and level_max")
        level_min = process.level_min if level_min is None else level_min
        level_max = process.level_max if level_max is None else level_max
    level_min, level_max = float(level_min), float(level_max)
    for name, value in (("level_min", level_min), ("level_max", level_max)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not level_min < level_max:
        raise ValueError(
            f"level_min must be below level_max, got level_min={level_min!r} >= "
            f"level_max={level_max!r}"
        )
    return level_min, level_max


def finish(levels: Tensor) -> Tensor:
    """Append the final 0 and check the result decreases strictly (float64, CPU)."""
    levels = torch.cat([levels.to(torch.float64), torch.zeros(1, dtype=torch.float64)])
    if not bool(torch.all(levels[:-1] > levels[1:])):
        raise ValueError(f"schedule is not strictly decreasing: {levels.tolist()}")
    return levels


def karras(
    process: NoiseProcess | None,
    steps: int,
    *,
    level_min: float | None = None,
    level_max: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """Karras et al. 2022, eq. 5: uniform steps in level^(1/rho) from level_max to level_min.

    level_i = (max^(1/rho) + i / (N - 1) (min^(1/rho) - max^(1/rho)))^rho, i < N, then 0.

    Args:
        process: supplies the default range (may be None if both levels are given).
        steps: number of steps N >= 1 (N = 1 is [level_max, 0]).
        level_min, level_max: the range (defaults from the process).
        rho: > 0; 7 is EDM's choice, larger values put more steps at low noise.
    Returns:
        float64 levels [steps + 1].
    """
    level_min, level_max = check_range(process, steps, level_min, level_max)
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    if steps == 1:
        return finish(torch.tensor([level_max], dtype=torch.float64))
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = level_min ** (1 / rho), level_max ** (1 / rho)
    levels = (hi + ramp * (lo - hi)) ** rho
    levels[0], levels[-1] = level_max, level_min  # exact end points despite the power
    return finish(levels)


def loglinear(
    process: NoiseProcess | None,
    steps: int,
    *,
    level_min: float | None = None,
    level_max: float | None = None,
) -> Tensor:
    """Uniform steps in log(level), i.e. in log-SNR = -2 log(level) (DPM-Solver's "logSNR").

    Args:
        process, steps, level_min, level_max: as in `karras`.
    Returns:
        float64 levels [steps + 1].
    """
    level_min, level_max = check_range(process, steps, level_min, level_max)
    if steps == 1:
        return finish(torch.tensor([level_max], dtype=torch.float64))
    log_levels = torch.linspace(
        math.log(level_max), math.log(level_min), steps, dtype=torch.float64
    )
    levels = log_levels.exp()
    levels[0], levels[-1] = level_max, level_min
    return finish(levels)


def _unit_grid(steps: int, spacing: str) -> Tensor:
    """Fractions u in [0, 1] of the time range, decreasing, one per step (1 = level_max)."""
    i = torch.arange(steps, dtype=torch.float64)
    if spacing == "linspace":  # both ends included
        return 1.0 - i / max(steps - 1, 1)
    if spacing == "trailing":  # starts at the top, stops short of the bottom
        return 1.0 - i / steps
    return (steps - 1 - i) / steps  # leading: ends at the bottom, starts below the top


def uniform_t(
    process: NoiseProcess,
    steps: int,
    *,
    level_min: float | None = None,
    level_max: float | None = None,
    spacing: Spacing = "linspace",
) -> Tensor:
    """Uniform steps in the process's own time t (DDPM/DDIM timesteps for `DiscreteVP`).

    For a `DiscreteVP` with its default range the timesteps are the integers of the three
    spacings of Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Table 2), with T = num_timesteps:
        linspace: round(linspace(0, T - 1, N)) reversed (both ends, DDPM's 1000 steps for N = T),
        trailing: round(T - i T / N) - 1 (starts at T - 1, the paper's recommendation),
        leading:  i * (T // N) reversed (ends at 0, never reaches T - 1), plus the
                  process's `steps_offset`.
    Otherwise (continuous processes, or a custom range) the same fractions of [t_min, t_max]
    are used with fractional t.

    Args:
        process: the noise process whose time variable is made uniform.
        steps: number of steps >= 1.
        level_min, level_max: the range (defaults from the process).
        spacing: "linspace", "trailing" or "leading".
    Returns:
        float64 levels [steps + 1].
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    custom = level_min is not None or level_max is not None
    level_min, level_max = check_range(process, steps, level_min, level_max)
    if isinstance(process, DiscreteVP) and not custom:
        total = process.num_timesteps
        if steps > total:
            raise ValueError(f"steps must be <= num_timesteps={total} for {process}, got {steps}")
        if spacing == "linspace":  # one step starts at the top, like the other schedules
            t = torch.linspace(0, total - 1, max(steps, 2), dtype=torch.float64).round().flip(0)
            t = t[:steps]
        elif spacing == "trailing":
            t = (total - torch.arange(steps, dtype=torch.float64) * (total / steps)).round() - 1
        else:
            t = (torch.arange(steps, dtype=torch.float64) * (total // steps)).flip(0)
            t = t + process.steps_offset
        return finish(process.level(t))
    t_lo = float(process.t_from_level(torch.tensor(level_min, dtype=torch.float64)))
    t_hi = float(process.t_from_level(torch.tensor(level_max, dtype=torch.float64)))
    u = _unit_grid(steps, spacing)
    levels = process.level(t_lo + u * (t_hi - t_lo))
    if spacing != "leading":
        levels[0] = level_max
    if spacing == "linspace" and steps > 1:
        levels[-1] = level_min
    return finish(levels)


def flow_shift(
    process: NoiseProcess | None,
    steps: int,
    *,
    level_min: float | None = None,
    level_max: float | None = None,
    shift: float | None = None,
) -> Tensor:
    """Uniform steps in flow time t = level / (1 + level), then the time shift (Esser et al. 2024).

    The shift t -> s t / (1 + (s - 1) t) multiplies the level by s (SD3, section 5.3.2), so the
    uniform grid is laid between the unshifted ends level / s and then scaled by s: the range is
    kept exactly and s > 1 spends more steps at high noise.

    Args:
        process, steps, level_min, level_max: as in `karras`.
        shift: s > 0; defaults to the process's own shift for a `RectifiedFlow`, else 1.
    Returns:
        float64 levels [steps + 1].
    """
    level_min, level_max = check_range(process, steps, level_min, level_max)
    if shift is None:
        shift = process.shift if isinstance(process, RectifiedFlow) else 1.0
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    if steps == 1:
        return finish(torch.tensor([level_max], dtype=torch.float64))
    t_hi = (level_max / shift) / (1 + level_max / shift)
    t_lo = (level_min / shift) / (1 + level_min / shift)
    t = torch.linspace(t_hi, t_lo, steps, dtype=torch.float64)
    levels = shift * t / (1 - t)
    levels[0], levels[-1] = level_max, level_min
    return finish(levels)
