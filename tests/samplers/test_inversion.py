"""Inversion on the exact Gaussian-mixture denoiser: invert, sample back, compare.

The round trip (`invert` up the schedule, then the matching sampler down) returns the start
with an error that shrinks at the method's order; with fixed-point refinement each step is the
exact inverse of the sampler's step, also under classifier-free guidance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffuse.samplers import ddim, dpmpp_2m, euler, karras
from diffuse.samplers.inversion import INVERSIONS, get_inversion, invert

from .conftest import LEVEL_MAX, LEVEL_MIN

STEPS = (16, 24, 32, 48, 64)


@pytest.fixture(scope="module")
def start(smooth_mixture) -> torch.Tensor:
    """Clean points [8, 3]: the accurate ODE end points of noise (on the data's support)."""
    g = torch.Generator().manual_seed(0)
    x = LEVEL_MAX * torch.randn(8, 3, generator=g, dtype=torch.float64)
    return ddim(
        smooth_mixture.denoise, x, karras(None, 400, level_min=LEVEL_MIN, level_max=LEVEL_MAX)
    )


def round_trip_error(denoise, x0, steps: int, order: int, sampler, refine: int = 0) -> float:
    levels = karras(None, steps, level_min=LEVEL_MIN, level_max=LEVEL_MAX)
    noisy = invert(denoise, x0, levels, order=order, refine=refine)
    back = sampler(denoise, noisy, levels)
    return float(((back - x0) ** 2).mean().sqrt())


@pytest.mark.parametrize(("order", "sampler"), [(1, ddim), (2, dpmpp_2m)], ids=["ddim", "dpmpp_2m"])
def test_round_trip_converges_at_the_order(order, sampler, smooth_mixture, start):
    errors = [round_trip_error(smooth_mixture.denoise, start, n, order, sampler) for n in STEPS]
    slope = -float(np.polyfit(np.log(STEPS), np.log(errors), 1)[0])
    assert all(math.isfinite(e) for e in errors)
    assert slope >= order - 0.3, f"order {slope:.2f}, expected >= {order}; errors {errors}"
    assert errors[-1] < errors[0] / 2


def test_euler_undoes_ddim_inversion_as_ddim_does(smooth_mixture, start):
    """DDIM is the Euler step on the level axis: both samplers invert the same way."""
    levels = karras(None, 20, level_min=LEVEL_MIN, level_max=LEVEL_MAX)
    noisy = invert(smooth_mixture.denoise, start, levels)
    a = ddim(smooth_mixture.denoise, noisy, levels)
    b = euler(smooth_mixture.denoise, noisy, levels)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_refinement_inverts_guided_sampling_exactly(smooth_mixture, start):
    """Under guidance (two mixtures, scale 1.5) the plain inversion drifts; the fixed-point
    one comes back to machine precision, at only 12 steps."""
    other = type(smooth_mixture).random(3, 3, seed=2, std_range=(0.2, 0.6))

    def guided(x, level):
        d_uncond = other.denoise(x, level)
        return d_uncond + 1.5 * (smooth_mixture.denoise(x, level) - d_uncond)

    plain = round_trip_error(guided, start, 12, 1, ddim)
    exact = round_trip_error(guided, start, 12, 1, ddim, refine=40)
    assert plain > 1e-2
    assert exact < 1e-9, f"refined round trip error {exact:.3g} (plain {plain:.3g})"


def test_every_inversion_names_its_sampler():
    assert set(INVERSIONS) == {"ddim", "dpmpp_2m"}
    assert get_inversion("dpmpp_2m")[1] == "dpmpp_2m"
    with pytest.raises(ValueError, match="unknown inversion 'nope'; valid: ddim, dpmpp_2m"):
        get_inversion("nope")


def test_bad_arguments_are_named(smooth_mixture, start):
    levels = karras(None, 4, level_min=LEVEL_MIN, level_max=LEVEL_MAX)
    with pytest.raises(ValueError, match="order must be 1 or 2, got 3"):
        invert(smooth_mixture.denoise, start, levels, order=3)
    with pytest.raises(ValueError, match="first-order inversion only"):
        invert(smooth_mixture.denoise, start, levels, order=2, refine=2)
    with pytest.raises(ValueError, match="refine must be"):
        invert(smooth_mixture.denoise, start, levels, refine=-1)
