"""Deterministic inversion: run the probability-flow ODE up the level axis, from data to noise.

Sampling walks a schedule `levels` (decreasing, ending in 0) down; inversion walks the same
schedule up, so that sampling from the returned point with the matching sampler comes back to
the start. On the level axis the ODE is dx/dlevel = (x - D(x, level)) / level, and both
directions use the same exponential-integrator steps, only with h = log(level / level') < 0:

- order 1 (`"ddim"`): x_b = (b / a) x_a + (1 - b / a) D(x_a, a), DDIM inversion (Song et al.
  2021, section 4.3; the Euler step of the ODE, run upwards). Sampler: `ddim` or `euler`.
- order 2 (`"dpmpp_2m"`): DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) on the increasing
  schedule, with its own history of outputs at the lower levels. Sampler: `dpmpp_2m`.

The round trip (invert, then sample) is off by the two discretisation errors, O(h^p) for a
method of order p. `refine` removes that error step by step for the first-order method: it
solves the sampler's own step backwards by fixed-point iteration (exact inversion of DDIM in
the spirit of Hong et al. 2024, "On Exact Inversion of DPM-Solvers", and of the EDICT/BDIA
line), for whatever denoise function is given, without null-text optimisation. It converges
where the fixed-point map is a contraction (see `solve_step_up`): always for an optimal
unguided denoiser, usually under mild guidance; strong guidance can break it at some steps.
The step out of level 0 has no explicit form (the denoiser's slope is undefined at 0), so it is
always solved by fixed-point iteration of D(x, levels[-2]) = x0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import Tensor

from diffuse.samplers.base import Callback, DenoiseFn, check_fraction, check_inputs, emit
from diffuse.samplers.ode import level_tensor

__all__ = ["INVERSIONS", "JUMP_ITERATIONS", "get_inversion", "invert", "solve_step_up"]

JUMP_ITERATIONS = 4
"""Fixed-point iterations of the step out of level 0 when `refine` asks for fewer."""


def solve_step_up(
    denoise: DenoiseFn, x_a: Tensor, a: float, b: float, x_b: Tensor, iterations: int
) -> Tensor:
    """Solve the first-order sampling step b -> a backwards for x_b by fixed-point iteration.

    The sampler's step is x_a = x_b + (a - b) eps(x_b, b), eps = (x - D(x, b)) / b, so x_b is
    the fixed point of x <- x_a + (b - a) (x - D(x, b)) / b. The map's Jacobian is
    (1 - a/b)(I - dD/dx): a contraction where dD/dx has eigenvalues in (0, 1], as the optimal
    denoiser's (a posterior covariance over b^2) does; a = 0 is the jump, D(x, b) = x_a.

    Args:
        denoise: the same denoise function the sampler will use.
        x_a: the sample at the lower level a [B, ...].
        a, b: the levels, 0 <= a < b.
        x_b: the starting guess at level b (e.g. the explicit inverse step).
        iterations: number of fixed-point updates (each one denoiser call).
    Returns:
        the refined x_b [B, ...].
    """
    for _ in range(iterations):
        denoised = denoise(x_b, level_tensor(b))
        x_b = x_a + ((b - a) / b) * (x_b - denoised)
    return x_b


def invert(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    order: int = 1,
    refine: int = 0,
    callback: Callback | None = None,
) -> Tensor:
    """Invert a sampling run: from x at level 0 up the schedule to levels[0].

    Args:
        denoise: denoise(x, level) -> x0 estimate (guided or not: the one sampling will use).
        x: the clean sample [B, ...] (level 0).
        levels: the sampling schedule, 1-D float64 decreasing, ending in 0; it is walked up.
        order: 1 (DDIM inversion) or 2 (DPM-Solver++(2M) upwards).
        refine: fixed-point iterations per step that make each order-1 step the exact inverse
            of the sampler's step (0: the plain explicit inversion). Only for order 1.
        callback: called after every step with a `StepInfo` whose `index` counts the steps
            taken upwards and whose `level` is the level reached; a returned tensor replaces x.
    Returns:
        the noisy sample at levels[0] [B, ...]; `ddim` / `euler` (order 1) or `dpmpp_2m`
        (order 2) on `levels` from there return approximately (or, refined, exactly) x.
    Raises:
        ValueError: an unknown order, a negative `refine`, refinement with order 2, or bad
            levels / a non-finite x (as every sampler checks).
    """
    if order not in (1, 2):
        raise ValueError(f"inversion order must be 1 or 2, got {order!r}")
    check_fraction("refine", refine)
    if refine and order != 1:
        raise ValueError(f"refine works with the first-order inversion only, got order {order}")
    sig = check_inputs(x, levels)
    up = sig[::-1]  # 0, levels[-2], ..., levels[0]
    steps = len(up) - 1
    # The jump out of 0: x itself is the first guess, then solve D(x, b) = x0.
    x0 = x
    x = solve_step_up(denoise, x0, 0.0, up[1], x0, max(refine, JUMP_ITERATIONS))
    x, _ = emit(callback, 0, up, x, x0)
    previous: tuple[float, Tensor] | None = None  # (h of the previous step, its D)
    for i in range(1, steps):
        a, b = up[i], up[i + 1]
        denoised = denoise(x, level_tensor(a))
        h = math.log(a / b)  # negative: the level rises
        mixed = denoised
        if order == 2 and previous is not None:
            r = previous[0] / h
            mixed = (1.0 + 0.5 / r) * denoised - (0.5 / r) * previous[1]
        x_b = (b / a) * x + (-math.expm1(-h)) * mixed
        if refine:
            x_b = solve_step_up(denoise, x, a, b, x_b, refine)
        previous = (h, denoised)
        x, _ = emit(callback, i, up, x_b, denoised)
    return x


def _order(order: int) -> Callable[..., Tensor]:
    def inversion(denoise: DenoiseFn, x: Tensor, levels: Tensor, **options: object) -> Tensor:
        return invert(denoise, x, levels, order=order, **options)

    inversion.__name__ = f"invert_order_{order}"
    inversion.__doc__ = f"`invert` with order={order}."
    return inversion


INVERSIONS: Mapping[str, tuple[Callable[..., Tensor], str]] = MappingProxyType(
    {
        "ddim": (_order(1), "ddim"),
        "dpmpp_2m": (_order(2), "dpmpp_2m"),
    }
)
"""Inversion methods by name -> (the inversion, the sampler that undoes it)."""


def get_inversion(name: str) -> tuple[Callable[..., Tensor], str]:
    """(inversion, matching sampler name) for `name`; ValueError listing the valid names."""
    try:
        return INVERSIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown inversion {name!r}; valid: {', '.join(sorted(INVERSIONS))}"
        ) from None
