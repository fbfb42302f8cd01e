"""Stochastic samplers reproduce the data distribution of an exact-score mixture.

Criteria (per sampler): the mean and covariance of 4000 samples lie within 5 standard errors of
the exact moments, and the sliced Wasserstein-2 distance to exact samples, averaged over 16
disjoint sets of 250, is within 1.5x the same average between two exact sample sets of 250.
Averaging over sets keeps the statistic's own noise (about 10 % here) well below the margin; a
single pair of sets fluctuates by a factor of 2.
"""

from __future__ import annotations

import functools

import pytest
import torch

from diffuse.gaussian_mixture import GaussianMixture, moments_close, sliced_wasserstein
from diffuse.processes import DiscreteVP
from diffuse.samplers import (
    ddim,
    ddpm_ancestral,
    dpmpp_2m_sde,
    dpmpp_3m_sde,
    euler_ancestral,
    exponential_multistep,
    heun,
    karras,
    uniform_t,
)

SETS, SET_SIZE = 16, 250
LEVEL_MIN, LEVEL_MAX = 0.01, 80.0


def _levels(steps: int) -> torch.Tensor:
    return karras(None, steps, level_min=LEVEL_MIN, level_max=LEVEL_MAX)


CASES = [
    # (id, sampler, levels): first-order samplers get more steps than second-order ones.
    ("ddpm_ancestral_1000", ddpm_ancestral, uniform_t(DiscreteVP(), 1000)),
    ("euler_ancestral", euler_ancestral, _levels(200)),
    ("ddim_eta1", functools.partial(ddim, eta=1.0), _levels(200)),
    ("ddim_eta0.5", functools.partial(ddim, eta=0.5), _levels(200)),
    ("dpmpp_2m_sde", dpmpp_2m_sde, _levels(100)),
    ("dpmpp_3m_sde", dpmpp_3m_sde, _levels(100)),
    ("dpmpp_sde_eta0.5", functools.partial(exponential_multistep, order=2, eta=0.5), _levels(100)),
    ("heun_churn", functools.partial(heun, s_churn=40.0), _levels(100)),
]


def _generator_noise(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=g, dtype=x.dtype)


def _sample(sampler, mixture: GaussianMixture, levels: torch.Tensor, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = float(levels[0]) * torch.randn(SETS * SET_SIZE, 2, generator=g, dtype=torch.float64)
    return sampler(mixture.denoise, x, levels, noise=_generator_noise(seed + 1))


def _mean_sw(a: torch.Tensor, b: torch.Tensor) -> float:
    pairs = zip(a.reshape(SETS, SET_SIZE, -1), b.reshape(SETS, SET_SIZE, -1))
    return (
        sum(
            sliced_wasserstein(x, y, projections=64, generator=torch.Generator().manual_seed(7))
            for x, y in pairs
        )
        / SETS
    )


@pytest.fixture(scope="module")
def exact_sets(planar_mixture):
    g = torch.Generator().manual_seed(1234)
    a = planar_mixture.sample(SETS * SET_SIZE, g)
    b = planar_mixture.sample(SETS * SET_SIZE, g)
    return a, b, _mean_sw(a, b)


@pytest.mark.parametrize(("sampler", "levels"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reproduces_distribution(sampler, levels, planar_mixture, exact_sets):
    a, _, baseline = exact_sets
    out = _sample(sampler, planar_mixture, levels)
    ok, message = moments_close(out, planar_mixture.mean(), planar_mixture.covariance())
    assert ok, message
    ratio = _mean_sw(out, a) / baseline
    assert ratio <= 1.5, f"sliced W2 is {ratio:.2f}x the exact-vs-exact distance ({message})"


def test_criterion_detects_a_wrong_noise_scale(planar_mixture, exact_sets):
    """A sampler with 30 % too much noise fails the same criteria (the test has power)."""
    a, _, baseline = exact_sets
    wrong = functools.partial(euler_ancestral, s_noise=1.3)
    out = _sample(wrong, planar_mixture, _levels(200))
    ok, _ = moments_close(out, planar_mixture.mean(), planar_mixture.covariance())
    assert not ok or _mean_sw(out, a) / baseline > 1.5
