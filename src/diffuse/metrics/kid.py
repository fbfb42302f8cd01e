"""Kernel Inception Distance with any feature extractor.

KID is the squared maximum mean discrepancy with the cubic polynomial kernel
k(x, y) = (x . y / d + 1)^3, estimated without bias on random subsets and averaged
(Binkowski et al. 2018, "Demystifying MMD GANs", eq. 2 for the unbiased MMD^2 estimator and
section 4 for the kernel). Unlike FD its estimator is unbiased, so it is comparable across
sample sizes and is ~0 (possibly negative) for two samples of one distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["KIDResult", "kid", "mmd2_unbiased", "polynomial_kernel"]


@dataclass(frozen=True)
class KIDResult:
    """Mean and standard deviation of the unbiased MMD^2 over subsets."""

    mean: float
    std: float
    subsets: int
    subset_size: int


def _as_f64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().to("cpu", torch.float64)


def polynomial_kernel(
    x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0
) -> torch.Tensor:
    """k(x, y) = (x . y / d + coef)^degree for rows of x (N, D) and y (M, D); returns (N, M)."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 between samples x (m, D) and y (n, D) with the polynomial kernel.

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
              - 2 sum_{i,j} k(x_i, y_j) / (m n)
    """
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))  # drop i == j terms
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    features1: np.ndarray | torch.Tensor,
    features2: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KIDResult:
    """KID between two feature sets (N1, D) and (N2, D), float64.

    Args:
        features1, features2: features of the two samples.
        subsets: number of random subset pairs.
        subset_size: samples per subset, capped at min(N1, N2).
        seed: seed of the subset draws (the result is deterministic given it).

    Returns:
        Mean and std of MMD^2 over the subsets.
    """
    f1, f2 = _as_f64(features1), _as_f64(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {f1.shape} and {f2.shape}")
    size = min(subset_size, f1.shape[0], f2.shape[0])
    if size < 2:
        raise ValueError(f"need at least 2 samples on each side, got {f1.shape[0]}, {f2.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        i = torch.randperm(f1.shape[0], generator=gen)[:size]
        j = torch.randperm(f2.shape[0], generator=gen)[:size]
        vals.append(mmd2_unbiased(f1[i], f2[j]))
    v = np.asarray(vals)
    return KIDResult(
        mean=float(v.mean()),
        std=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        subsets=subsets,
        subset_size=size,
    )
