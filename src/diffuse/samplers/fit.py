"""Fit a schedule to a given denoiser: choose the levels that make a sampler most accurate.

The idea of "Align Your Steps" (Sabour et al. 2024) and of "optimal time steps" (Xue et al.
2024): with few steps, where the levels sit matters as much as the solver. Here the procedure is
the plainest version of it, and it works for any `denoise` function and any deterministic
sampler:

1. a reference: the end points of the probability-flow ODE from a batch of starting noises,
   solved accurately (UniPC order 3 with `reference_steps` Karras steps, unless given);
2. the interior levels, in log space, parametrised so that they always decrease: the gaps
   log(level_i / level_{i+1}) are (log(level_max / level_min)) * softmax(theta), theta_0 = 0;
3. theta minimises the mean squared error between the sampler's end points and the reference,
   by a derivative-free pattern search (Hooke and Jeeves 1961) started from Karras' schedule,
   with a fixed budget of sampler runs.

The end levels stay at level_max and level_min, so the fitted schedule covers the same range as
the schedule it starts from. Fit on one batch of noises and evaluate on another.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from diffuse.samplers.base import DenoiseFn
from diffuse.samplers.multistep import unipc
from diffuse.samplers.schedules import check_range, finish, karras

logger = logging.getLogger(__name__)


def _levels_from_theta(theta: list[float], level_min: float, level_max: float) -> Tensor:
    """Decreasing levels [level_max, ..., level_min, 0] from the free gap logits theta."""
    logits = torch.tensor([0.0, *theta], dtype=torch.float64)
    gaps = math.log(level_max / level_min) * torch.softmax(logits, dim=0)
    offsets = torch.cat([torch.zeros(1, dtype=torch.float64), gaps.cumsum(0)])
    log_levels = math.log(level_max) - offsets
    levels = log_levels.exp()
    levels[0], levels[-1] = level_max, level_min
    return finish(levels)


def _theta_from_levels(levels: Tensor) -> list[float]:
    """Inverse of `_levels_from_theta` for levels [level_max, ..., level_min, 0]."""
    log_levels = levels[:-1].log()
    gaps = log_levels[:-1] - log_levels[1:]
    return (gaps[1:] / gaps[0]).log().tolist()


def fit_schedule(
    denoise: DenoiseFn,
    sampler: Callable[..., Tensor],
    x: Tensor,
    steps: int,
    *,
    level_min: float,
    level_max: float,
    init: Tensor | None = None,
    target: Tensor | None = None,
    reference_steps: int = 256,
    budget: int = 200,
    sampler_options: Mapping[str, object] | None = None,
    objective: Callable[[Tensor, Tensor], float] | None = None,
) -> Tensor:
    """Levels for `sampler` with `steps` steps, fitted to `denoise` on the noises `x`.

    Args:
        denoise: denoise(x, level) -> x0 estimate (any model; called on `x`'s batch).
        sampler: a deterministic sampler function (e.g. `unipc`, `dpmpp_2m`).
        x: starting samples [B, ...] at level_max (a fitting batch, kept apart from evaluation).
        steps: number of sampler steps (levels has steps + 1 entries).
        level_min, level_max: the range; both ends are kept.
        init: starting levels [steps + 1] with these ends (default: Karras, rho = 7).
        target: reference end points for `x` [B, ...] (default: UniPC-3 with
            `reference_steps` Karras steps).
        reference_steps: steps of the default reference solve.
        budget: number of sampler runs the search may spend.
        sampler_options: extra keyword options for the sampler.
    Returns:
        float64 levels [steps + 1], level_max first, level_min second to last, 0 last.
    """
    level_min, level_max = check_range(None, steps, level_min, level_max)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget!r}")
    options = dict(sampler_options or {})
    levels = karras(None, steps, level_min=level_min, level_max=level_max) if init is None else init
    levels = torch.as_tensor(levels, dtype=torch.float64)
    ends = (float(levels[0]), float(levels[-2])) if levels.shape == (steps + 1,) else None
    if (
        ends is None
        or steps > 1
        and not (math.isclose(ends[0], level_max) and math.isclose(ends[1], level_min))
    ):
        raise ValueError(
            f"init must have {steps + 1} levels from level_max={level_max} to "
            f"level_min={level_min} then 0, got {levels.tolist()}"
        )
    if steps < 3:  # nothing between the two fixed ends
        return levels
    if target is None:
        ref_levels = karras(None, reference_steps, level_min=level_min, level_max=level_max)
        target = unipc(denoise, x, ref_levels, order=3)

    @torch.no_grad()
    def loss(theta: list[float]) -> float:
        out = sampler(denoise, x, _levels_from_theta(theta, level_min, level_max), **options)
        value = objective(out, target) if objective else float(((out - target) ** 2).mean())
        return value if math.isfinite(value) else math.inf

    theta = _theta_from_levels(levels)
    best = loss(theta)
    start, evals, delta = best, 1, 0.5
    # Hooke-Jeeves: exploratory moves along each coordinate, then a pattern move along the
    # total displacement while it keeps improving; halve the step when nothing helps.
    while evals < budget and delta > 1e-3:
        base = list(theta)
        for j in range(len(theta)):
            for sign in (1.0, -1.0):
                trial = list(theta)
                trial[j] += sign * delta
                value = loss(trial)
                evals += 1
                if value < best:
                    theta, best = trial, value
                    break
                if evals >= budget:
                    break
            if evals >= budget:
                break
        if theta == base:
            delta *= 0.5
            continue
        while evals < budget:  # pattern move: keep going in the direction that worked
            trial = [t + (t - b) for t, b in zip(theta, base)]
            value = loss(trial)
            evals += 1
            if value >= best:
                break
            base, theta, best = theta, trial, value
    logger.info("fit_schedule: %d steps, mse %.3e -> %.3e in %d runs", steps, start, best, evals)
    return _levels_from_theta(theta, level_min, level_max)
