"""Bespoke solvers: a linear multistep sampler whose coefficients are fitted to one denoiser.

Every multistep sampler here (Euler, DPM-Solver++, DEIS, UniP) writes each state as a linear
combination of the starting noise and the model outputs so far. A bespoke solver keeps that form
and frees all its coefficients (Shaul et al. 2024, "Bespoke Non-Stationary Solvers", eq. 5):

    x_{i+1} = a_i x_0 + sum_{j <= i} b_ij D_j,    D_j = denoise(x_j, level_j),

with one denoiser call per level before the final 0. The coefficients start from a classical
sampler on the same levels (so the unfitted solver *is* that sampler) and are fitted by L-BFGS
to minimise the mean squared error to accurate ODE end points on a batch of starting noises,
differentiating through the denoiser. It is a general procedure for any differentiable
`denoise`; fit on one batch of noises and evaluate on another.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from diffuse.samplers.base import Callback, DenoiseFn, NoiseFn, check_inputs, emit
from diffuse.samplers.expint import integration_weights
from diffuse.samplers.fit import (
    fit_schedule,
    reference_endpoints,
    stratified_noises,
    weighted_mse,
)
from diffuse.samplers.multistep import deis, exponential_multistep, unipc
from diffuse.samplers.ode import level_tensor

logger = logging.getLogger(__name__)

Base = Literal["deis", "dpmpp", "unipc"]


@dataclass(frozen=True)
class BespokeCoefficients:
    """The fitted solver: levels and the coefficients of x_{i+1} = a_i x_0 + sum_j b_ij D_j.

    Attributes:
        levels: the steps + 1 levels (ending in 0) the coefficients belong to.
        a: weight of the starting noise in each new state [steps].
        b: b[i] holds the i + 1 weights of D_0..D_i in state i + 1.
    """

    levels: tuple[float, ...]
    a: tuple[float, ...]
    b: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        steps = len(self.levels) - 1
        if len(self.a) != steps or [len(row) for row in self.b] != list(range(1, steps + 1)):
            raise ValueError(
                f"coefficients do not fit {steps} steps: len(a)={len(self.a)}, "
                f"row lengths of b={[len(row) for row in self.b]}"
            )

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form."""
        return {"levels": list(self.levels), "a": list(self.a), "b": [list(r) for r in self.b]}

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> BespokeCoefficients:
        """Inverse of `to_dict`."""
        return cls(
            tuple(float(v) for v in data["levels"]),
            tuple(float(v) for v in data["a"]),
            tuple(tuple(float(v) for v in row) for row in data["b"]),
        )


def initial_coefficients(
    levels: Tensor, *, base: Base = "deis", order: int = 2
) -> BespokeCoefficients:
    """The coefficients of a classical multistep sampler, unrolled onto x_0 and the D_j.

    The sampler is run symbolically: every state is a vector of weights over
    (x_0, D_0, ..., D_{n-1}), and the bespoke state i is the point where D_i is evaluated
    (for UniPC the predictor's output; its corrected state only feeds later predictions).

    Args:
        levels: decreasing levels ending in 0.
        base: "deis" (`multistep.deis`), "dpmpp" (`multistep.exponential_multistep`) or
            "unipc" (`multistep.unipc` with its corrector).
        order: the base sampler's order (1 to 3; for UniPC the predictor order).
    Returns:
        coefficients that reproduce the base sampler on `levels`.
    """
    if base not in ("deis", "dpmpp", "unipc"):
        raise ValueError(f"base must be 'deis', 'dpmpp' or 'unipc', got {base!r}")
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    sig = torch.as_tensor(levels, dtype=torch.float64).tolist()
    steps = len(sig) - 1
    size = steps + 1  # weights over x_0 and D_0..D_{steps-1}

    def unit(index: int) -> list[float]:
        vec = [0.0] * size
        vec[index] = 1.0
        return vec

    def combine(scale: float, vec: list[float], terms: list[tuple[float, list[float]]]):
        out = [scale * v for v in vec]
        for w, term in terms:
            out = [o + w * t for o, t in zip(out, term)]
        return out

    x0 = unit(0)
    evaluated = [x0]  # the point where D_i is evaluated
    state = x0  # the sampler's own state (differs from `evaluated` for UniPC)
    eps_terms: list[list[float]] = []  # (x_j - D_j) / level_j, for DEIS
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        eps_terms.append(combine(1.0 / s, evaluated[i], [(-1.0 / s, unit(i + 1))]))
        if s_next == 0.0:  # the jump to zero: the output is D_i
            evaluated.append(unit(i + 1))
            break
        lam, h = -math.log(s), math.log(s / s_next)
        first = max(0, i - order + 1)
        nodes = [-math.log(sig[j]) - lam for j in range(first, i + 1)]
        outputs = [unit(j + 1) for j in range(first, i + 1)]
        if base == "deis":  # x' = x + level' sum_j w_j eps_j
            weights = integration_weights(nodes, h, -1.0)
            terms = [(s_next * w, eps_terms[j]) for w, j in zip(weights, range(first, i + 1))]
            state = combine(1.0, state, terms)
            evaluated.append(state)
            continue
        weights = integration_weights(nodes, h, 1.0)  # x' = e^{-h} x + sum_j w_j D_j
        predicted = combine(s_next / s, state, list(zip(weights, outputs)))
        evaluated.append(predicted)
        if base == "unipc":  # UniC: D_{i+1} is evaluated at `predicted`, then corrects the state
            corrector = integration_weights([*nodes, h], h, 1.0)
            state = combine(s_next / s, state, list(zip(corrector, [*outputs, unit(i + 2)])))
        else:
            state = predicted
    a = tuple(v[0] for v in evaluated[1:])
    b = tuple(tuple(v[1 : i + 2]) for i, v in enumerate(evaluated[1:]))
    return BespokeCoefficients(tuple(sig), a, b)


def bespoke(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    coefficients: BespokeCoefficients,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """Run a bespoke solver: x_{i+1} = a_i x_0 + sum_{j <= i} b_ij D_j (see the module docstring).

    Args:
        denoise: denoise(x, level) -> x0 estimate.
        x: starting sample [B, ...] at levels[0].
        levels: must equal coefficients.levels (the solver is fitted to them).
        coefficients: from `fit_bespoke` or `initial_coefficients`.
        callback: called after every step with a `StepInfo`; may return a replacement x (the
            next model call sees it; later states stay combinations of x_0 and the outputs).
        noise: unused (deterministic).
    Returns:
        the final sample [B, ...].
    """
    sig = check_inputs(x, levels)
    if len(sig) != len(coefficients.levels) or any(
        not math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12)
        for u, v in zip(sig, coefficients.levels)
    ):
        raise ValueError(
            f"levels {sig} differ from the levels the coefficients were fitted to "
            f"{list(coefficients.levels)}"
        )
    return _run(denoise, x, sig, coefficients.a, coefficients.b, callback)


def _run(denoise, x0, sig, a, b, callback=None) -> Tensor:  # noqa: ANN001
    """The loop shared by `bespoke` and the fit (a, b may be tensors that carry gradients)."""
    outputs: list[Tensor] = []
    x = x0
    for i in range(len(sig) - 1):
        outputs.append(denoise(x, level_tensor(sig[i])))
        x = a[i] * x0
        for coef, d in zip(b[i], outputs):
            x = x + coef * d
        x, _ = emit(callback, i, sig, x, outputs[-1])
    return x


def fit_bespoke(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    base: Base = "deis",
    order: int = 2,
    target: Tensor | None = None,
    validation: tuple[Tensor, ...] | None = None,
    reference_steps: int = 256,
    iterations: int = 60,
    rounds: int = 6,
    weights: Tensor | None = None,
) -> BespokeCoefficients:
    """Fit bespoke coefficients on the levels `levels` to the denoiser `denoise`.

    Procedure (fixed, documented): start from `initial_coefficients(levels, base, order)`;
    minimise mean((solver(x) - target)^2) over all a_i and b_ij with L-BFGS (strong-Wolfe line
    search), differentiating through `denoise`, in `rounds` rounds of `iterations / rounds`
    evaluations. After each round the validation error (on `validation`, else on the fitting
    batch) is measured and the best coefficients so far are kept, the start included: the fit
    stops early when it starts to overfit and never returns something worse than its start.

    Args:
        denoise: a differentiable denoise(x, level) -> x0 estimate.
        x: fitting batch of starting samples [B, ...] at levels[0] (not the evaluation batch).
        levels: decreasing levels ending in 0, e.g. from `fit_schedule` or `karras`.
        base, order: the classical sampler the fit starts from.
        target: accurate end points for x (default: UniPC-3 with `reference_steps` Karras steps
            over [levels[-2], levels[0]]).
        validation: (starting samples, their accurate end points[, weights]) held out from
            the fit.
        weights: per-sample weights [B] of the fitting error (default: equal).
        reference_steps: steps of the default reference solve.
        iterations: L-BFGS function evaluations in total.
        rounds: validation checks.
    Returns:
        the fitted `BespokeCoefficients`.
    """
    start = initial_coefficients(levels, base=base, order=order)
    sig = list(start.levels)
    if target is None:
        target = reference_endpoints(
            denoise, x, level_min=sig[-2], level_max=sig[0], steps=reference_steps
        )
    target = target.detach()
    with torch.enable_grad():  # the fit differentiates the denoiser's output w.r.t. its input
        probe = x[:1].detach().clone().requires_grad_(True)
        if not denoise(probe, level_tensor(sig[0])).requires_grad:
            raise ValueError("fit_bespoke needs a denoise function that autograd can differentiate")
    a = torch.tensor(start.a, dtype=torch.float64, requires_grad=True)
    b_flat = torch.tensor(
        [v for row in start.b for v in row], dtype=torch.float64, requires_grad=True
    )
    offsets = [i * (i + 1) // 2 for i in range(len(start.a))]
    x_val, target_val, *rest = (x, target, weights) if validation is None else validation
    weights_val = rest[0] if rest else None

    def rows() -> list[Tensor]:
        return [b_flat[o : o + i + 1] for i, o in enumerate(offsets)]

    def error(inputs: Tensor, goal: Tensor, w: Tensor | None) -> Tensor:
        return weighted_mse(_run(denoise, inputs, sig, a, rows()), goal, w)

    def snapshot() -> BespokeCoefficients:
        values = b_flat.detach().tolist()
        b = tuple(tuple(values[o : o + i + 1]) for i, o in enumerate(offsets))
        return BespokeCoefficients(start.levels, tuple(a.detach().tolist()), b)

    optimizer = torch.optim.LBFGS(
        [a, b_flat],
        lr=1.0,
        max_iter=max(iterations // max(rounds, 1), 1),
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        value = error(x, target, weights)
        value.backward()
        return value

    with torch.no_grad():
        best_value, best = float(error(x_val, target_val, weights_val)), start
    first = best_value
    for _ in range(max(rounds, 1)):
        with torch.enable_grad():
            optimizer.step(closure)
        with torch.no_grad():
            value = float(error(x_val, target_val, weights_val))
        if math.isfinite(value) and value < best_value:
            best_value, best = value, snapshot()
    logger.info(
        "fit_bespoke: %d steps, validation mse %.3e -> %.3e", len(start.a), first, best_value
    )
    return best


CANDIDATES: tuple[tuple[Base, int], ...] = (("unipc", 2), ("dpmpp", 3))
"""The classical samplers `fit_solver` starts from: UniPC-2 (order 3) and DPM-Solver++(3M).

Chosen on mixtures of the sampler benchmark (seeds 0 and 4, NFE 5-10, 12 candidates from
DEIS, UniPC and DPM-Solver++ of orders 2 and 3): these two were the winners of the stratified
validation at every NFE but one, where DEIS-3 won by a small margin."""


@dataclass(frozen=True)
class Candidate:
    """One candidate of `fit_candidates`: a base sampler with its fitted schedule and solver.

    Attributes:
        base, order: the classical sampler it started from.
        levels: the fitted schedule (on which the base sampler itself is the "+fit" sampler).
        coefficients: the bespoke solver fitted on those levels.
        validation_mse: the solver's error on the held-out samples (weighted where they are).
        batch: "random" (fitted on the noises given) or "stratified" (`stratified_noises`).
    """

    base: str
    order: int
    levels: Tensor
    coefficients: BespokeCoefficients
    validation_mse: float
    batch: str = "random"  # the fitting batch: "random" or "stratified" (`stratified_noises`)


def fit_candidates(
    denoise: DenoiseFn,
    x: Tensor,
    steps: int,
    *,
    level_min: float,
    level_max: float,
    target: Tensor | None = None,
    candidates: tuple[tuple[Base, int], ...] = CANDIDATES,
    validation_fraction: float = 0.25,
    budget: int = 100,
    iterations: int = 48,
    reference_steps: int = 256,
    weights: Tensor | None = None,
) -> list[Candidate]:
    """Steps 1-3 of `fit_solver` (see there); returns every candidate with its validation error."""

    if not 0 < validation_fraction < 1 or x.shape[0] < 2:
        raise ValueError(
            f"need validation_fraction in (0, 1) and >= 2 samples, got {validation_fraction!r} "
            f"and {x.shape[0]}"
        )
    if target is None:
        target = reference_endpoints(
            denoise, x, level_min=level_min, level_max=level_max, steps=reference_steps
        )
    held = max(1, round(validation_fraction * x.shape[0]))
    x_fit, x_val = x[:-held], x[-held:]
    t_fit, t_val = target[:-held], target[-held:]
    w_fit, w_val = (None, None) if weights is None else (weights[:-held], weights[-held:])
    samplers = {"deis": deis, "unipc": unipc, "dpmpp": exponential_multistep}
    results = []
    for base, order in candidates:
        if base not in samplers:
            raise ValueError(f"unknown base {base!r}; valid: {', '.join(samplers)}")
        sampler = functools.partial(samplers[base], order=order)
        levels = fit_schedule(
            denoise,
            sampler,
            x_fit,
            steps,
            level_min=level_min,
            level_max=level_max,
            target=t_fit,
            budget=budget,
            weights=w_fit,
        )
        coefficients = fit_bespoke(
            denoise,
            x_fit,
            levels,
            base=base,
            order=order,
            target=t_fit,
            validation=(x_val, t_val, w_val),
            iterations=iterations,
            weights=w_fit,
        )
        with torch.no_grad():
            out = bespoke(denoise, x_val, levels, coefficients=coefficients)
        value = float(weighted_mse(out, t_val, w_val))
        logger.info(
            "fit_candidates: %s-%d, %d steps, validation mse %.3e", base, order, steps, value
        )
        results.append(Candidate(base, order, levels, coefficients, value))
    return results


def fit_solver(
    denoise: DenoiseFn,
    x: Tensor,
    steps: int,
    *,
    level_min: float,
    level_max: float,
    target: Tensor | None = None,
    candidates: tuple[tuple[Base, int], ...] = CANDIDATES,
    validation_fraction: float = 0.25,
    budget: int = 100,
    iterations: int = 48,
    reference_steps: int = 256,
    pool: Tensor | None = None,
    hard: int = 256,
    typical: int = 768,
) -> BespokeCoefficients:
    """The whole fitting procedure for one denoiser and a budget of `steps` calls.

    1. Hold out the last `validation_fraction` of the starting samples `x` for validation.
    2. Reference end points: `target`, or UniPC-3 with `reference_steps` Karras steps.
    3. For each candidate base sampler (default UniPC-2 and DPM-Solver++(3M)): fit its schedule
       (`fit_schedule`, `budget` runs) on the fitting part, then bespoke coefficients on that
       schedule (`fit_bespoke`, `iterations` L-BFGS evaluations, early-stopped on validation).
    4. Return the candidate with the lowest validation error.

    With `pool` (many more starting noises, [N, ...] with N >= 2 (hard + typical)) the
    candidates are also fitted on a stratified batch from its first half, and every candidate
    is judged on a stratified batch from its second half (`fit_candidates_stratified`): the
    rare noises that dominate the error at 8-10 steps are then in the fit and in the choice.

    Args:
        denoise: a differentiable denoise(x, level) -> x0 estimate.
        x: starting samples [B, ...] at level_max, B >= 2 (kept apart from evaluation).
        steps: denoiser calls of the solver (its levels have steps + 1 entries).
        level_min, level_max: the range; both ends are kept.
        target: accurate end points for x (optional).
        candidates: (base, order) pairs for `initial_coefficients`.
        validation_fraction: share of x held out, in (0, 1).
        budget, iterations, reference_steps: as in `fit_schedule` and `fit_bespoke`.
        pool, hard, typical: extra noises and the strata sizes (see above).
    Returns:
        the fitted `BespokeCoefficients`; sample with
        `bespoke(denoise, x, torch.tensor(c.levels), coefficients=c)`.
    """
    options = {
        "level_min": level_min,
        "level_max": level_max,
        "target": target,
        "candidates": candidates,
        "validation_fraction": validation_fraction,
        "budget": budget,
        "iterations": iterations,
        "reference_steps": reference_steps,
    }
    if pool is None:
        found = fit_candidates(denoise, x, steps, **options)
    else:
        found = fit_candidates_stratified(
            denoise, x, steps, pool=pool, hard=hard, typical=typical, **options
        )
    return min(found, key=lambda c: c.validation_mse).coefficients


def fit_candidates_stratified(
    denoise: DenoiseFn,
    x: Tensor,
    steps: int,
    *,
    pool: Tensor,
    level_min: float,
    level_max: float,
    hard: int = 256,
    typical: int = 768,
    target: Tensor | None = None,
    reference_steps: int = 256,
    **options: object,
) -> list[Candidate]:
    """`fit_candidates` on the random batch `x` and on a stratified batch (`stratified_noises`
    from the first half of `pool`), every candidate then judged on a stratified batch from the
    second half: its `validation_mse` is that batch's weighted error, an estimate of the error
    over all noises in which the rare, sensitive ones are counted exactly. Fitting on a random
    batch is better for the typical noise, on the stratified one for the rare ones; which
    matters more depends on the denoiser and `steps`, so the held-out estimate decides.

    Args:
        denoise, x, steps, level_min, level_max, target, reference_steps: as in
            `fit_candidates`; other keyword `options` are passed on to it.
        pool: extra starting noises [N, ...] at level_max, N >= 2 (hard + typical), apart
            from `x` and from any evaluation.
        hard, typical: strata sizes of each stratified batch.
    Returns:
        every candidate (random-batch ones first), with the stratified validation error.
    """
    half = pool.shape[0] // 2
    if half < hard + typical:
        raise ValueError(
            f"pool of {pool.shape[0]} noises is too small for two stratified batches of "
            f"{hard} + {typical}"
        )
    span = {"level_min": level_min, "level_max": level_max}
    strata = {"hard": hard, "typical": typical}
    x_strat, w_strat = stratified_noises(denoise, pool[:half], steps, **span, **strata)
    x_val, w_val = stratified_noises(denoise, pool[half:], steps, **span, **strata, seed=1)
    t_val = reference_endpoints(denoise, x_val, **span, steps=reference_steps)
    common = {**span, "reference_steps": reference_steps, **options}
    found = fit_candidates(denoise, x, steps, target=target, **common)
    found += [  # their references: fit_candidates' default, the same solve
        replace(c, batch="stratified")
        for c in fit_candidates(denoise, x_strat, steps, weights=w_strat, **common)
    ]
    judged = []
    for c in found:
        with torch.no_grad():
            out = bespoke(denoise, x_val, c.levels, coefficients=c.coefficients)
        judged.append(replace(c, validation_mse=float(weighted_mse(out, t_val, w_val))))
        logger.info(
            "fit_candidates_stratified: %s-%d on the %s batch, %d steps, stratified "
            "validation mse %.3e",
            c.base,
            c.order,
            c.batch,
            steps,
            judged[-1].validation_mse,
        )
    return judged
