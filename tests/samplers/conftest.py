"""Shared fixtures for the sampler suite: exact-score mixtures and their reference solutions."""

from __future__ import annotations

import pytest
import torch

from diffuse.gaussian_mixture import GaussianMixture

# The convergence problem: a smooth 3-D mixture with moderate separation on [0.02, 10].
LEVEL_MIN, LEVEL_MAX = 0.02, 10.0


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """Every module here runs on one thread (tests/conftest.py, `one_thread`)."""


@pytest.fixture(scope="session")
def smooth_mixture() -> GaussianMixture:
    """3 components in 3-D, full covariances with standard deviations in [0.2, 0.6]."""
    return GaussianMixture.random(3, 3, seed=1, std_range=(0.2, 0.6))


@pytest.fixture(scope="session")
def ode_problem(smooth_mixture: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting noise at LEVEL_MAX [8, 3] and the exact end point D(x(LEVEL_MIN), LEVEL_MIN)."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = LEVEL_MAX * torch.randn(8, 3, generator=g, dtype=torch.float64)
    ref = smooth_mixture.reference_endpoint(x, LEVEL_MAX, LEVEL_MIN, rtol=1e-12, atol=1e-12)
    return x, ref


@pytest.fixture(scope="session")
def planar_mixture() -> GaussianMixture:
    """4 components in 2-D with standard deviations in [0.1, 0.4] (the distribution tests)."""
    return GaussianMixture.random(2, 4, seed=3, std_range=(0.1, 0.4))
