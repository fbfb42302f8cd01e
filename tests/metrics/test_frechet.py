"""Frechet distance: closed forms for Gaussians and agreement of the batched statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuse.metrics.frechet import (
    RunningStats,
    feature_stats,
    frechet_distance,
    frechet_from_features,
)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_gaussians_have_zero_distance() -> None:
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(16), _random_spd(rng, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_commuting_covariances_match_closed_form() -> None:
    # Same eigenvectors: FD = |mu1 - mu2|^2 + sum_i (sqrt(l1_i) - sqrt(l2_i))^2.
    rng = np.random.default_rng(1)
    d = 12
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    l1, l2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_general_covariances_match_scipy_sqrtm() -> None:
    import scipy.linalg as scipy_linalg

    rng = np.random.default_rng(2)
    d = 10
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_one_dimensional_gaussians() -> None:
    # N(0, 1) vs N(3, 4): 3^2 + (1 - 2)^2 = 10.
    assert frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)


def test_samples_of_known_gaussians_approach_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 4, generator=gen)
    b = 2.0 * torch.randn(200_000, 4, generator=gen) + 1.0
    # 4 * 1^2 (means) + 4 * (1 - 2)^2 (std devs) = 8.
    assert frechet_from_features(a, b) == pytest.approx(8.0, rel=0.02)
    assert abs(frechet_from_features(a[:100_000], a[100_000:])) < 1e-3


def test_running_stats_equal_one_shot_and_numpy() -> None:
    rng = np.random.default_rng(3)
    f = rng.standard_normal((1000, 8)) * 5 + 1e4  # large offset: tests the shifted sums
    rs = RunningStats()
    for chunk in np.array_split(f, 7):
        rs.update(torch.from_numpy(chunk))  # float64 tensors are accepted too
    s = rs.stats()
    ref = feature_stats(f)
    np.testing.assert_allclose(s.mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(f, rowvar=False), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ref.sigma, s.sigma, rtol=1e-8, atol=1e-8)
    assert s.n == ref.n == 1000


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(np.zeros((1, 3)))
