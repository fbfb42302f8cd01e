"""KID: the unbiased MMD^2 estimator is ~0 for one distribution and positive for two."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffuse.metrics.kid import kid, mmd2_unbiased, polynomial_kernel


def test_mmd2_matches_definition_on_tiny_sets() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 3, generator=gen, dtype=torch.float64) + 0.5

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a @ b / 3 + 1) ** 3)

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2_unbiased(x, y) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (5, 4)


def test_same_distribution_is_unbiased_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(4000, 16, generator=gen)
    b = torch.randn(4000, 16, generator=gen)
    r = kid(a, b, subsets=50, subset_size=500)
    # Unbiased: the mean over subsets is within a few standard errors of zero.
    assert abs(r.mean) < 4 * r.std / r.subsets**0.5 + 1e-6
    # Averaged over many independent small draws the estimator stays centred on zero.
    vals = [
        mmd2_unbiased(torch.randn(20, 4, generator=gen), torch.randn(20, 4, generator=gen))
        for _ in range(400)
    ]
    mean = sum(vals) / len(vals)
    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    assert abs(mean) < 4 * sd / len(vals) ** 0.5


def test_different_distributions_are_positive_and_deterministic() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2000, 16, generator=gen)
    b = torch.randn(2000, 16, generator=gen) * 1.3 + 0.3
    r1 = kid(a, b, subsets=20, subset_size=500, seed=7)
    r2 = kid(a.numpy(), b.numpy(), subsets=20, subset_size=500, seed=7)
    assert r1.mean > 10 * r1.std / r1.subsets**0.5
    assert r1 == r2


def test_subset_size_is_capped_and_bad_input_raises() -> None:
    a = torch.randn(50, 4)
    assert kid(a, torch.randn(30, 4), subsets=3, subset_size=1000).subset_size == 30
    with pytest.raises(ValueError, match="equal D"):
        kid(a, torch.randn(30, 5))
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], a)
