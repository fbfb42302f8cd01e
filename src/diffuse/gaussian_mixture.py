"""Gaussian-mixture data with an exact denoiser: an oracle to verify samplers against.

For x0 ~ sum_k w_k N(mu_k, Sigma_k), the noisy x = x0 + level * eps on the level axis is again
a mixture, x ~ sum_k w_k N(mu_k, Sigma_k + level^2 I), and the optimal denoiser is closed form
(e.g. Karras et al. 2022, appendix B.3, for isotropic components):

    D(x, level) = E[x0 | x] = sum_k r_k(x) [mu_k + Sigma_k (Sigma_k + level^2 I)^{-1} (x - mu_k)],

with responsibilities r_k computed by log-sum-exp. Every process maps to this axis, so the
oracle serves DDPM, VE, EDM and flow models alike. `reference_solution` integrates the
probability-flow ODE with scipy's DOP853 (the `test`/`bench` extra) to near machine precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class GaussianMixture:
    """A mixture of Gaussians with full or diagonal covariances, computed in float64.

    Args:
        weights: mixture weights [K] (normalised here).
        means: component means [K, d].
        covariances: full covariances [K, d, d] or diagonal variances [K, d]; positive
            semi-definite.
    """

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor) -> None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        if means.ndim != 2 or weights.shape != means.shape[:1]:
            raise ValueError(
                f"need weights [K] and means [K, d], got {tuple(weights.shape)} and "
                f"{tuple(means.shape)}"
            )
        k, d = means.shape
        if not bool(torch.all(weights >= 0)) or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights.tolist()}")
        if covariances.shape == (k, d):
            evals, evecs = covariances, torch.eye(d, dtype=torch.float64).expand(k, d, d)
        elif covariances.shape == (k, d, d):
            sym = 0.5 * (covariances + covariances.transpose(1, 2))
            evals, evecs = torch.linalg.eigh(sym)
        else:
            raise ValueError(
                f"covariances must be [K, d] or [K, d, d] with K={k}, d={d}, got "
                f"{tuple(covariances.shape)}"
            )
        if float(evals.min()) < -1e-12 * max(float(evals.abs().max()), 1.0):
            raise ValueError(
                f"covariances must be positive semi-definite, min eigenvalue {float(evals.min())}"
            )
        self.weights = weights / weights.sum()
        self.means = means
        self.evals = evals.clamp(min=0.0)  # [K, d] eigenvalues of Sigma_k
        self.evecs = evecs.contiguous()  # [K, d, d], columns are eigenvectors
        # All components' bases side by side, so projecting a batch is one matmul.
        self._basis = self.evecs.permute(1, 0, 2).reshape(d, k * d)  # [d, K*d]
        self._mean_coords = torch.einsum("kij,ki->kj", self.evecs, means)  # [K, d]
        self._log_weights = torch.log(self.weights)

    @property
    def dim(self) -> int:
        """Data dimension d."""
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        """Number of components K."""
        return self.means.shape[0]

    def covariances(self) -> Tensor:
        """Full component covariances [K, d, d]."""
        return torch.einsum("kij,kj,klj->kil", self.evecs, self.evals, self.evecs)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def random(
        cls,
        dim: int,
        components: int,
        *,
        seed: int = 0,
        mean_scale: float = 1.0,
        std_range: tuple[float, float] = (0.05, 0.5),
        full: bool = True,
    ) -> GaussianMixture:
        """A random mixture, deterministic for a given seed.

        Means are drawn N(0, mean_scale^2 I); each component's standard deviations along its
        axes are log-uniform in `std_range`; axes are a random rotation when `full`; weights
        are Dirichlet(1).

        Args:
            dim, components: d and K.
            seed: generator seed.
            mean_scale: scale of the means.
            std_range: (low, high) of the per-axis standard deviations.
            full: random rotations (full covariances) instead of axis-aligned ones.
        """
        g = torch.Generator().manual_seed(seed)
        means = mean_scale * torch.randn(components, dim, generator=g, dtype=torch.float64)
        lo, hi = math.log(std_range[0]), math.log(std_range[1])
        u = torch.rand(components, dim, generator=g, dtype=torch.float64)
        variances = torch.exp(2 * (lo + (hi - lo) * u))  # [K, d]
        weights = -torch.log(torch.rand(components, generator=g, dtype=torch.float64))
        if not full:
            return cls(weights, means, variances)
        q, r = torch.linalg.qr(torch.randn(components, dim, dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # a Haar rotation
        covariances = torch.einsum("kij,kj,klj->kil", q, variances, q)
        return cls(weights, means, covariances)

    @classmethod
    def ring(cls, n: int = 8, radius: float = 1.0, std: float = 0.1) -> GaussianMixture:
        """n equal isotropic Gaussians on a circle in 2-D (the classic "8 Gaussians" toy)."""
        angle = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
        means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        variances = torch.full((n, 2), std**2, dtype=torch.float64)
        return cls(torch.ones(n, dtype=torch.float64), means, variances)

    # ------------------------------------------------------------------ exact quantities

    def mean(self) -> Tensor:
        """Exact mean of the data [d]."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Exact covariance of the data [d, d] (law of total covariance)."""
        centred = self.means - self.mean()
        between = torch.einsum("k,ki,kj->ij", self.weights, centred, centred)
        within = torch.einsum("k,kij->ij", self.weights, self.covariances())
        return between + within

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples of the data [n, d] (float64)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        scaled = z * self.evals[comp].sqrt()  # [n, d] in each component's axes
        return self.means[comp] + torch.einsum("nij,nj->ni", self.evecs[comp], scaled)

    def _flat(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x[0].numel() != self.dim:
            raise ValueError(
                f"x must be [B, ...] with {self.dim} values per sample, got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    def _posterior(self, x: Tensor, level: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Log joint log(w_k N(x; mu_k, Sigma_k + level^2 I)) [B, K], coords z [B, K, d] and
        the noisy variances [B or 1, K, d] in each component's eigenbasis."""
        x = self._flat(x)
        b, k, d = x.shape[0], self.num_components, self.dim
        level = torch.as_tensor(level, dtype=torch.float64).reshape(-1)
        z = (x @ self._basis).reshape(b, k, d) - self._mean_coords  # U_k^T (x - mu_k)
        var = self.evals + (level**2).reshape(-1, 1, 1)  # eigenvalues of Sigma_k + level^2 I
        log_like = -0.5 * ((z * z / var).sum(-1) + var.log().sum(-1) + d * math.log(2 * math.pi))
        return self._log_weights + log_like, z, var

    def log_prob(self, x: Tensor, level: Tensor | float = 0.0) -> Tensor:
        """log p(x) of the noisy marginal at `level` [B] (level 0: the data density)."""
        log_joint, _, _ = self._posterior(x, level)
        return torch.logsumexp(log_joint, dim=1)

    def denoise(self, x: Tensor, level: Tensor | float) -> Tensor:
        """The exact posterior mean E[x0 | x] at noise level `level` (see the module docstring).

        Args:
            x: noisy samples on the level axis [B, ...] with d values per sample.
            level: a scalar or per-sample [B] noise level, > 0.
        Returns:
            E[x0 | x] shaped and typed like x.
        """
        log_joint, z, var = self._posterior(x, level)
        b, k, d = z.shape
        r = torch.softmax(log_joint, dim=1)  # responsibilities, log-sum-exp stable [B, K]
        # mu_k + U_k diag(lambda / (lambda + level^2)) U_k^T (x - mu_k), mixed by r_k.
        shrunk = (r.unsqueeze(-1) * (self.evals / var) * z).reshape(b, k * d)
        x0 = r @ self.means + shrunk @ self._basis.T  # [B, d]
        return x0.reshape(x.shape).to(x.dtype)

    __call__ = denoise

    def score(self, x: Tensor, level: Tensor | float) -> Tensor:
        """grad log p(x; level) = (D(x, level) - x) / level^2 (Tweedie), like x."""
        level = torch.as_tensor(level, dtype=torch.float64)
        lv = level.reshape(-1, *([1] * (x.ndim - 1))) if level.ndim else level
        return ((self.denoise(x, level).to(torch.float64) - x.to(torch.float64)) / lv**2).to(
            x.dtype
        )

    # ------------------------------------------------------------------ reference ODE

    def reference_solution(
        self,
        x: Tensor,
        level_from: float,
        level_to: float,
        *,
        rtol: float = 1e-10,
        atol: float = 1e-10,
    ) -> Tensor:
        """Integrate the probability-flow ODE from level_from down to level_to with DOP853.

        In log-level time u = log(level) the ODE dx/dlevel = (x - D) / level becomes
        dx/du = x - D(x, e^u), which is smooth across the whole range; the batch is one state.

        Args:
            x: samples at level_from [B, ...].
            level_from, level_to: start and end levels, both > 0.
            rtol, atol: DOP853 tolerances.
        Returns:
            x at level_to, shaped like x, float64.
        """
        try:
            from scipy.integrate import solve_ivp
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "reference_solution needs scipy: pip install 'diffuse[test]' or 'diffuse[bench]'"
            ) from err
        if not (level_from > 0 and level_to > 0):
            raise ValueError(f"levels must be > 0, got {level_from!r} -> {level_to!r}")
        shape = x.shape
        start = self._flat(x).reshape(-1).cpu().numpy()

        def rhs(u: float, y):  # noqa: ANN001, ANN202 - scipy's callback signature
            state = torch.from_numpy(y).reshape(shape[0], self.dim)
            return (state - self.denoise(state, math.exp(u))).reshape(-1).numpy()

        sol = solve_ivp(
            rhs,
            (math.log(level_from), math.log(level_to)),
            start,
            method="DOP853",
            rtol=rtol,
            atol=atol,
        )
        if not sol.success:  # pragma: no cover - DOP853 does not fail on this smooth problem
            raise RuntimeError(f"DOP853 failed: {sol.message}")
        return torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)

    def reference_endpoint(
        self, x: Tensor, level_max: float, level_min: float, **tolerances: float
    ) -> Tensor:
        """The sampler convention's end point: D(x(level_min), level_min), x from level_max.

        Every sampler's last step jumps from level_min to 0 by returning the denoised estimate,
        so this is what an exact solver of the ODE on [level_min, level_max] returns.
        """
        x_min = self.reference_solution(x, level_max, level_min, **tolerances)
        return self.denoise(x_min, level_min)


def sliced_wasserstein(
    a: Tensor,
    b: Tensor,
    *,
    projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein-2 distance between two equal-size sample sets.

    SW2(a, b)^2 = E_theta W2^2(theta^T a, theta^T b) over uniform unit directions theta
    (Rabin et al. 2011); each 1-D W2 is the mean squared gap between sorted projections.

    Args:
        a, b: samples [N, d] (flattened from [N, ...]); same N.
        projections: number of random directions.
        generator: for the directions (pass one for reproducible numbers).
    Returns:
        the distance as a float.
    """
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"sample sets must have equal shapes, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    theta = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ theta, dim=0)
    pb, _ = torch.sort(b @ theta, dim=0)
    return float(((pa - pb) ** 2).mean().sqrt())


def moments_close(
    samples: Tensor, mean: Tensor, covariance: Tensor, *, z: float = 5.0
) -> tuple[bool, str]:
    """Check a sample set's mean and covariance against exact moments.

    Standard errors: Var(mean_i) = C_ii / N; Var(cov_ij) ~ (C_ii C_jj + C_ij^2) / N (Gaussian
    fourth moments; loose for mixtures, hence the default 5 standard errors).

    Args:
        samples: [N, d].
        mean, covariance: exact moments [d], [d, d].
        z: tolerance in standard errors.
    Returns:
        (ok, a message with the worst deviations in standard errors).
    """
    samples = samples.reshape(samples.shape[0], -1).to(torch.float64)
    n = samples.shape[0]
    diag = torch.diagonal(covariance)
    mean_err = ((samples.mean(0) - mean) / (diag / n).sqrt()).abs().max()
    cov_se = ((diag[:, None] * diag[None, :] + covariance**2) / n).sqrt()
    cov_err = ((torch.cov(samples.T) - covariance) / cov_se).abs().max()
    message = f"mean off by {float(mean_err):.2f} SE, covariance by {float(cov_err):.2f} SE"
    return bool(mean_err <= z and cov_err <= z), message


__all__: Sequence[str] = ["GaussianMixture", "moments_close", "sliced_wasserstein"]
