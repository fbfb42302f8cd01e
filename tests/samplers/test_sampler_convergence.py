"""Deterministic samplers converge to the exact ODE end point at their theoretical order.

The slope of log(error) against log(denoiser calls), fitted over a range where the asymptotic
regime holds (Karras schedules on [0.02, 10] for a smooth 3-D mixture), must be within 0.3 of
the order.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from diffuse.samplers import (
    ddim,
    dpmpp_2m,
    dpmpp_3m,
    euler,
    exponential_multistep,
    heun,
    karras,
    unipc,
)

from .conftest import LEVEL_MAX, LEVEL_MIN

STEPS_LOW = (16, 24, 32, 48, 64)
STEPS_HIGH = (24, 32, 48, 64, 96)

CASES = [
    # (id, sampler, expected order, step counts)
    ("euler", euler, 1, STEPS_LOW),
    ("ddim", ddim, 1, STEPS_LOW),
    ("heun", heun, 2, (12, 16, 24, 32, 48)),
    ("dpmpp_2m", dpmpp_2m, 2, STEPS_LOW),
    ("dpmpp_3m", dpmpp_3m, 3, STEPS_HIGH),
    ("exp_multistep_2", functools.partial(exponential_multistep, order=2), 2, STEPS_LOW),
    # UniPC-p: the UniP-p predictor alone has order p; the UniC corrector adds one.
    ("unipc_1", functools.partial(unipc, order=1), 2, STEPS_LOW),
    ("unipc_2", functools.partial(unipc, order=2), 3, STEPS_HIGH),
    ("unipc_3", functools.partial(unipc, order=3), 4, STEPS_HIGH),
    ("unip_2", functools.partial(unipc, order=2, corrector=False), 2, STEPS_LOW),
    ("unip_3", functools.partial(unipc, order=3, corrector=False), 3, STEPS_HIGH),
]


def convergence_slope(sampler, mixture, x, ref, steps_list) -> tuple[float, list[float]]:
    """Fitted order -d log(error) / d log(NFE), with the NFE counted from real calls."""
    nfes, errors = [], []
    for steps in steps_list:
        calls = 0

        def denoise(xx, level):
            nonlocal calls
            calls += 1
            return mixture.denoise(xx, level)

        levels = karras(None, steps, level_min=LEVEL_MIN, level_max=LEVEL_MAX)
        out = sampler(denoise, x.clone(), levels)
        nfes.append(calls)
        errors.append(float(((out - ref) ** 2).mean().sqrt()))
    slope = np.polyfit(np.log(nfes), np.log(errors), 1)[0]
    return -float(slope), errors


@pytest.mark.parametrize(
    ("sampler", "order", "steps"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_convergence_order(sampler, order, steps, smooth_mixture, ode_problem):
    x, ref = ode_problem
    slope, errors = convergence_slope(sampler, smooth_mixture, x, ref, steps)
    assert all(math.isfinite(e) for e in errors)
    assert abs(slope - order) <= 0.3, f"order {slope:.2f}, expected {order}; errors {errors}"


def test_reference_is_accurate_enough(smooth_mixture, ode_problem):
    """The finest runs are far above the reference's own error (tolerance 1e-12)."""
    x, ref = ode_problem
    loose = smooth_mixture.reference_endpoint(x, LEVEL_MAX, LEVEL_MIN, rtol=1e-10, atol=1e-10)
    assert float((loose - ref).abs().max()) < 1e-8


def test_heun_counts_two_calls_per_step_but_the_last():
    calls = 0

    def denoise(x, level):
        nonlocal calls
        calls += 1
        return 0.5 * x

    heun(
        denoise,
        torch.ones(2, 3, dtype=torch.float64),
        karras(None, 7, level_min=0.1, level_max=10.0),
    )
    assert calls == 2 * 7 - 1
