"""Frechet distance between Gaussians fitted to two feature sets (the "FID" formula).

FD = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))
(Dowson & Landau 1982, eq. 2; used as FID by Heusel et al. 2017, "GANs Trained by a Two
Time-Scale Update Rule...", eq. 6). Any feature extractor works; the project uses its own
per-dataset classifiers (`diffuse.metrics.classifier`). All arithmetic is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FeatureStats",
    "RunningStats",
    "feature_stats",
    "frechet_distance",
    "frechet_from_features",
]

ArrayLike = np.ndarray | torch.Tensor


def _as_f64(x: ArrayLike) -> np.ndarray:
    """Array of float64 on the host."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of n feature vectors, float64."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


class RunningStats:
    """Accumulates feature mean and covariance over batches in float64.

    Sums are taken around a shift (the first batch's mean) so the covariance does not suffer
    from catastrophic cancellation when features have a large common offset.
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: ArrayLike) -> None:
        """Add a batch of features, shape (N, D)."""
        f = _as_f64(features)
        if f.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {f.shape}")
        if self._shift is None:
            self._shift = f.mean(axis=0)
            self._sum = np.zeros(f.shape[1])
            self._outer = np.zeros((f.shape[1], f.shape[1]))
        elif f.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature width {f.shape[1]} != earlier {self._shift.shape[0]}")
        d = f - self._shift
        self._sum += d.sum(axis=0)
        self._outer += d.T @ d
        self.n += f.shape[0]

    def stats(self) -> FeatureStats:
        """Mean and unbiased (n - 1) covariance of everything seen."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors, got {self.n}")
        m = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(m, m)) / (self.n - 1)
        return FeatureStats(mu=self._shift + m, sigma=sigma, n=self.n)


def feature_stats(features: ArrayLike) -> FeatureStats:
    """Mean and unbiased covariance of features (N, D)."""
    rs = RunningStats()
    rs.update(features)
    return rs.stats()


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum as S1 S2; this avoids
    the complex round-off of a general (non-symmetric) matrix square root.

    Args:
        mu1, mu2: means, shape (D,).
        sigma1, sigma2: covariances, shape (D, D).

    Returns:
        The distance (>= 0 up to round-off).
    """
    mu1, mu2, s1, s2 = (_as_f64(a) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {s1.shape}, "
            f"sigma2 {s2.shape}"
        )
    s1 = 0.5 * (s1 + s1.T)  # enforce symmetry lost to round-off
    s2 = 0.5 * (s2 + s2.T)
    w, v = np.linalg.eigh(s1)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # S1^(1/2), symmetric PSD
    m = sqrt_s1 @ s2 @ sqrt_s1
    ev = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = np.sqrt(np.clip(ev, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_from_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    a, b = feature_stats(features1), feature_stats(features2)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
