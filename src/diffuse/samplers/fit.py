"""Fit a schedule to a given denoiser: choose the levels that make a sampler most accurate.

The idea of "Align Your Steps" (Sabour et al. 2024) and of "optimal time steps" (Xue et al.
2024): with few steps, where the levels sit matters as much as the solver. Here the procedure is
the plainest version of it, and it works for any `denoise` function and any deterministic
sampler:

1. a reference: the end points of the probability-flow ODE from a batch of starting noises,
   solved accurately (UniPC order 3 with `reference_steps` Karras steps, unless given);
2. the levels in log space, parametrised so that they always decrease inside the range: the
   log-gaps between consecutive levels, plus the unused gap between the last level and
   level_min when the end is free, are log(level_max / level_min) * softmax(theta), theta_0 = 0;
3. theta minimises the mean squared error between the sampler's end points and the reference,
   by a derivative-free pattern search (Hooke and Jeeves 1961) with a fixed budget of sampler
   runs, started from the best of Karras (rho = 7), log-linear and flow-uniform schedules.

The first level stays at level_max. With `free_end` the last level before the jump to zero may
stop above level_min (as DDIM's "trailing" timesteps do): the jump from a slightly higher level
can be a better use of a call than resolving the last, finest noise levels. Fit on one batch of
noises and evaluate on another.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from diffuse.samplers.base import DenoiseFn
from diffuse.samplers.multistep import unipc
from diffuse.samplers.schedules import check_range, finish, flow_shift, karras, loglinear

logger = logging.getLogger(__name__)

_SLACK = 0.01  # share of the log range left unused by the initial schedules when the end is free


def _levels_from_theta(theta: list[float], level_min: float, level_max: float, free_end: bool):
    """Decreasing levels [level_max, ..., >= level_min, 0] from the gap logits theta."""
    logits = torch.tensor([0.0, *theta], dtype=torch.float64)
    gaps = math.log(level_max / level_min) * torch.softmax(logits, dim=0)
    if free_end:
        gaps = gaps[:-1]  # the last share is the slack between the last level and level_min
    offsets = torch.cat([torch.zeros(1, dtype=torch.float64), gaps.cumsum(0)])
    levels = (math.log(level_max) - offsets).exp()
    levels[0] = level_max
    if not free_end:
        levels[-1] = level_min
    return finish(levels)


def _theta_from_levels(levels: Tensor, level_min: float, free_end: bool) -> list[float]:
    """Inverse of `_levels_from_theta`."""
    log_levels = levels[:-1].log()
    gaps = log_levels[:-1] - log_levels[1:]
    if free_end:
        used = float(gaps.sum())
        total = float(log_levels[0]) - math.log(level_min)
        slack = max(total - used, _SLACK * total)
        gaps = torch.cat([gaps * (total - slack) / used, torch.tensor([slack])])
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
    free_end: bool = True,
    reference_steps: int = 256,
    budget: int = 200,
    sampler_options: Mapping[str, object] | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Levels for `sampler` with `steps` steps, fitted to `denoise` on the noises `x`.

    Args:
        denoise: denoise(x, level) -> x0 estimate (any model; called on `x`'s batch).
        sampler: a deterministic sampler function (e.g. `unipc`, `deis`).
        x: starting samples [B, ...] at level_max (a fitting batch, kept apart from evaluation).
        steps: number of sampler steps (levels has steps + 1 entries).
        level_min, level_max: the range; level_max is kept, level_min too unless `free_end`.
        init: starting levels [steps + 1] in the range (default: the best of Karras rho = 7,
            log-linear and flow-uniform on the fitting batch).
        target: reference end points for `x` [B, ...] (default: UniPC-3 with
            `reference_steps` Karras steps), i.e. D(x(level_min), level_min).
        free_end: let the last level before 0 rise above level_min.
        reference_steps: steps of the default reference solve.
        budget: number of sampler runs the search may spend.
        sampler_options: extra keyword options for the sampler.
        weights: per-sample weights [B] of the squared error (default: equal), e.g. from
            `stratified_noises`.
    Returns:
        float64 levels [steps + 1], level_max first, 0 last.
    """
    level_min, level_max = check_range(None, steps, level_min, level_max)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget!r}")
    options = dict(sampler_options or {})
    span = {"level_min": level_min, "level_max": level_max}
    if init is None:
        starts = [karras(None, steps, **span), loglinear(None, steps, **span)]
        starts.append(flow_shift(None, steps, **span, shift=1.0))
    else:
        init = torch.as_tensor(init, dtype=torch.float64)
        bad = init.shape != (steps + 1,) or not math.isclose(float(init[0]), level_max)
        if bad or float(init[-2]) < level_min * (1 - 1e-9):
            raise ValueError(
                f"init must have {steps + 1} levels from level_max={level_max} down to at least "
                f"level_min={level_min} then 0, got {init.tolist()}"
            )
        starts = [init]
    if steps < 2 or steps == 2 and not free_end:  # nothing to move between the fixed ends
        return starts[0]
    if target is None:
        target = reference_endpoints(denoise, x, **span, steps=reference_steps)

    @torch.no_grad()
    def loss(theta: list[float]) -> float:
        levels = _levels_from_theta(theta, level_min, level_max, free_end)
        out = sampler(denoise, x, levels, **options)
        value = float(weighted_mse(out, target, weights))
        return value if math.isfinite(value) else math.inf

    tried = [(loss(t), t) for t in (_theta_from_levels(s, level_min, free_end) for s in starts)]
    best, theta = min(tried, key=lambda item: item[0])
    start, evals, delta = best, len(tried), 0.5
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
    return _levels_from_theta(theta, level_min, level_max, free_end)


def reference_endpoints(
    denoise: DenoiseFn, x: Tensor, *, level_min: float, level_max: float, steps: int = 256
) -> Tensor:
    """Accurate end points D(x(level_min), level_min) of the probability-flow ODE from the
    noises `x` at level_max, from the denoiser alone: UniPC-3 with `steps` Karras steps (the
    reference every fit here uses when none is given)."""
    levels = karras(None, steps, level_min=level_min, level_max=level_max)
    with torch.no_grad():
        return unipc(denoise, x, levels, order=3)


def weighted_mse(out: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean squared error, per sample averaged over its elements, then over the batch with
    `weights` [B] (normalised; None: equal weights)."""
    per_sample = ((out - target) ** 2).flatten(1).mean(1)
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights).sum() / weights.sum()


def stratified_noises(
    denoise: DenoiseFn,
    pool: Tensor,
    steps: int,
    *,
    level_min: float,
    level_max: float,
    hard: int,
    typical: int,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """A fitting batch whose weighted mean error estimates the error over a large pool.

    With few steps the error over many noises is dominated by rare ones: noises near a boundary
    between modes, where a small error early on sends the trajectory to another mode. A plain
    random batch rarely holds them, so a solver fitted on it can be worse than a classical one
    on them. Here every noise of `pool` is screened cheaply: the gap between UniPC-2 with
    `steps` Karras steps and UniPC-3 with twice as many marks the sensitive ones. The `hard`
    noises with the largest gap are all kept (weight 1); `typical` of the others are drawn at
    random and weighted (len(pool) - hard) / typical. The weighted mean squared error over the
    batch is then an unbiased estimate of the mean over the pool, with the rare noises counted
    exactly (stratified sampling).

    Args:
        denoise: denoise(x, level) -> x0 estimate.
        pool: candidate starting noises [N, ...] at level_max (kept apart from evaluation).
        steps: the denoiser calls of the solver to be fitted.
        level_min, level_max: the range.
        hard, typical: noises of each stratum, hard + typical <= N.
        seed: draws the typical noises.
    Returns:
        (noises [hard + typical, ...], weights [hard + typical]), hard and typical noises
        interleaved so that any contiguous split (e.g. validation) holds both kinds.
    """
    n = pool.shape[0]
    if hard < 0 or typical < 1 or hard + typical > n:
        raise ValueError(f"need hard >= 0, typical >= 1, hard + typical <= {n}: {hard}, {typical}")
    span = {"level_min": level_min, "level_max": level_max}
    with torch.no_grad():
        coarse = unipc(denoise, pool, karras(None, steps, **span), order=2)
        fine = unipc(denoise, pool, karras(None, 2 * steps, **span), order=3)
    gap = ((coarse - fine) ** 2).flatten(1).mean(1)
    order = torch.argsort(gap, descending=True)
    rest = order[hard:]
    g = torch.Generator().manual_seed(seed)
    picked = rest[torch.randperm(rest.numel(), generator=g)[:typical]]
    # hard noises spread evenly through the batch, at every `every`-th place
    total = hard + typical
    is_hard = torch.zeros(total, dtype=torch.bool)
    is_hard[torch.arange(hard) * max(1, total // max(hard, 1))] = True
    index = torch.empty(total, dtype=torch.long)
    index[is_hard], index[~is_hard] = order[:hard], picked
    weights = torch.full((total,), (n - hard) / typical, dtype=torch.float64)
    weights[is_hard] = 1.0
    return pool[index], weights
