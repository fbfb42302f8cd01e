"""The exact-score Gaussian-mixture oracle."""

from __future__ import annotations

import math

import pytest
import torch

from diffuse.gaussian_mixture import GaussianMixture, moments_close, sliced_wasserstein
from diffuse.processes import EDM, VE, CosineVP, DiscreteVP, RectifiedFlow
from diffuse.samplers import dpmpp_3m, karras

MIXTURES = {
    "full": GaussianMixture.random(4, 3, seed=0),
    "diagonal": GaussianMixture.random(4, 3, seed=1, full=False),
    "low_rank": GaussianMixture.random(6, 3, seed=2, rank=2, noise_std=0.1),
    "ring": GaussianMixture.ring(),
}


def _brute_denoise(mixture: GaussianMixture, x: torch.Tensor, level: float) -> torch.Tensor:
    """E[x0 | x] from dense covariances and torch.distributions, one sample at a time."""
    covs, eye = mixture.covariances(), torch.eye(mixture.dim, dtype=torch.float64)
    rows = []
    for xi in x:
        logs, means = [], []
        for k in range(mixture.num_components):
            noisy = covs[k] + level**2 * eye
            normal = torch.distributions.MultivariateNormal(mixture.means[k], noisy)
            logs.append(mixture.weights[k].log() + normal.log_prob(xi))
            means.append(
                mixture.means[k] + covs[k] @ torch.linalg.solve(noisy, xi - mixture.means[k])
            )
        r = torch.softmax(torch.stack(logs), 0)
        rows.append((r[:, None] * torch.stack(means)).sum(0))
    return torch.stack(rows)


@pytest.mark.parametrize("name", list(MIXTURES))
@pytest.mark.parametrize("level", [0.03, 0.4, 5.0])
def test_denoise_matches_the_dense_formula(name, level):
    mixture = MIXTURES[name]
    x = torch.randn(6, mixture.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(mixture.denoise(x, level), _brute_denoise(mixture, x, level), atol=1e-12)


@pytest.mark.parametrize("name", list(MIXTURES))
def test_denoise_is_tweedie(name):
    """D = x + level^2 grad log p(x; level), with the gradient by autograd of log_prob."""
    mixture = MIXTURES[name]
    x = torch.randn(5, mixture.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x, 0.7).sum(), x)
    assert torch.allclose(mixture.denoise(x.detach(), 0.7), x.detach() + 0.49 * grad, atol=1e-12)
    assert torch.allclose(mixture.score(x.detach(), 0.7), grad, atol=1e-12)


def test_diagonal_and_full_forms_agree():
    diag = MIXTURES["diagonal"]
    full = GaussianMixture(diag.weights, diag.means, diag.covariances())
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    levels = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    assert torch.allclose(diag.denoise(x, levels), full.denoise(x, levels), atol=1e-12)
    assert torch.allclose(diag.log_prob(x, 0.3), full.log_prob(x, 0.3), atol=1e-12)


def test_per_sample_levels_and_shapes():
    mixture = MIXTURES["full"]
    x = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    levels = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    out = mixture.denoise(x, levels)
    assert out.shape == x.shape
    for i in range(3):
        assert torch.allclose(out[i], mixture.denoise(x[i : i + 1], levels[i])[0], atol=1e-14)
    assert mixture.denoise(x.float(), 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        mixture.denoise(torch.zeros(3, 5), 1.0)


def test_far_away_inputs_stay_finite():
    """Log-sum-exp keeps the responsibilities finite where every density underflows."""
    mixture = MIXTURES["ring"]
    x = torch.tensor([[1e4, -1e4], [0.0, 3e3]], dtype=torch.float64)
    for level in (1e-3, 1.0):
        assert bool(torch.isfinite(mixture.denoise(x, level)).all())
        assert bool(torch.isfinite(mixture.log_prob(x, level)).all())


def test_single_gaussian_ode_has_the_closed_form():
    """One Gaussian: x(l) = mu + sqrt((lambda + l^2) / (lambda + l0^2)) (x(l0) - mu) per axis."""
    variances = torch.tensor([[0.04, 0.25, 1.0]], dtype=torch.float64)
    mean = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    gaussian = GaussianMixture(torch.ones(1), mean, variances)
    x = 10.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = gaussian.reference_solution(x, 10.0, 0.01)
    exact = mean + ((variances + 0.01**2) / (variances + 100.0)).sqrt() * (x - mean)
    assert torch.allclose(out, exact, atol=1e-9, rtol=0)


def test_moments_and_sampling():
    mixture = MIXTURES["low_rank"]
    samples = mixture.sample(20000, torch.Generator().manual_seed(5))
    ok, message = moments_close(samples, mixture.mean(), mixture.covariance())
    assert ok, message
    ok, _ = moments_close(samples + 0.2, mixture.mean(), mixture.covariance())
    assert not ok


def test_sliced_wasserstein():
    a = torch.randn(500, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert sliced_wasserstein(a, a) == 0.0
    # In 1-D every direction is +-1, so a shift by c gives exactly |c|.
    assert math.isclose(sliced_wasserstein(a, a + 0.3, projections=8), 0.3, rel_tol=1e-12)
    with pytest.raises(ValueError, match="equal shapes"):
        sliced_wasserstein(a, a[:10])


def test_constructor_validation():
    with pytest.raises(ValueError, match="semi-definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.ones(1, 3))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(-torch.ones(2), torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="orthonormal"):
        GaussianMixture.low_rank(
            torch.ones(1), torch.zeros(1, 3), torch.ones(1, 3, 1), torch.ones(1, 1), torch.ones(1)
        )


@pytest.mark.parametrize(
    "process",
    [DiscreteVP(), DiscreteVP("scaled_linear"), CosineVP(), VE(), EDM(), RectifiedFlow(shift=3.0)],
    ids=repr,
)
def test_oracle_serves_every_process(process):
    """On each process's own range a 100-step sampler lands on the exact ODE end point."""
    mixture = GaussianMixture.random(3, 3, seed=1, std_range=(0.2, 0.6))
    lo, hi = process.level_min, process.level_max
    x = hi * torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref = mixture.reference_endpoint(x, hi, lo, rtol=1e-9, atol=1e-9)
    out = dpmpp_3m(mixture.denoise, x, karras(process, 100))
    assert float((out - ref).abs().max()) < 1e-3
