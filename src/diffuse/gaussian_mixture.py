"""Gaussian-mixture data with an exact denoiser: an oracle to verify samplers against.

For x0 ~ sum_k w_k N(mu_k, Sigma_k), the noisy x = x0 + level * eps on the level axis is again
a mixture, x ~ sum_k w_k N(mu_k, Sigma_k + level^2 I), and the optimal denoiser is closed form
(Tweedie's formula; e.g. Karras et al. 2022, appendix B.3, for isotropic components):

    D(x, level) = E[x0 | x] = sum_k r_k(x) [mu_k + Sigma_k (Sigma_k + level^2 I)^{-1} (x - mu_k)],

with responsibilities r_k(x) = softmax_k(log w_k + log N(x; mu_k, Sigma_k + level^2 I)) computed
by log-sum-exp, all in float64. Every process maps to this axis, so the oracle serves DDPM, VE,
EDM and flow models alike. `reference_solution` integrates the probability-flow ODE with scipy's
DOP853 (the `test` / `bench` extra) to near machine precision.

Each covariance is stored as Sigma_k = U_k diag(lambda_k) U_k^T + tau_k^2 (I - U_k U_k^T) with
U_k [d, r] orthonormal: r = d covers full and diagonal covariances, r < d low-rank data plus
isotropic noise (image-like: most variance in a few directions), at O(K r) cost per sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _f64(value: Tensor | float) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


class GaussianMixture:
    """A mixture of Gaussians with full, diagonal or low-rank-plus-isotropic covariances.

    Args:
        weights: mixture weights [K] (normalised here).
        means: component means [K, d].
        covariances: full covariances [K, d, d] or diagonal variances [K, d]; positive
            semi-definite. Use `low_rank` for the factored form.
    """

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor) -> None:
        means = _f64(means)
        covariances = _f64(covariances)
        if means.ndim != 2:
            raise ValueError(f"means must be [K, d], got {tuple(means.shape)}")
        k, d = means.shape
        if covariances.shape == (k, d):
            evals, evecs = covariances, torch.eye(d, dtype=torch.float64).expand(k, d, d)
        elif covariances.shape == (k, d, d):
            evals, evecs = torch.linalg.eigh(0.5 * (covariances + covariances.transpose(1, 2)))
        else:
            raise ValueError(
                f"covariances must be [K, d] or [K, d, d] with K={k}, d={d}, got "
                f"{tuple(covariances.shape)}"
            )
        self._setup(weights, means, evecs, evals, torch.zeros(k, dtype=torch.float64))

    @classmethod
    def low_rank(
        cls, weights: Tensor, means: Tensor, bases: Tensor, variances: Tensor, noise: Tensor
    ) -> GaussianMixture:
        """Components U diag(variances) U^T + noise (I - U U^T), U = bases [K, d, r] orthonormal.

        Args:
            weights: [K]; means: [K, d]; bases: orthonormal columns [K, d, r];
            variances: variances along the basis [K, r]; noise: isotropic variance of the
                remaining d - r directions [K].
        """
        self = cls.__new__(cls)
        self._setup(weights, _f64(means), _f64(bases), _f64(variances), _f64(noise).reshape(-1))
        gram = self.evecs.transpose(1, 2) @ self.evecs
        eye = torch.eye(gram.shape[-1], dtype=torch.float64)
        if float((gram - eye).abs().max()) > 1e-8:
            raise ValueError("bases must have orthonormal columns (U^T U = I)")
        return self

    def _setup(
        self, weights: Tensor, means: Tensor, evecs: Tensor, evals: Tensor, noise: Tensor
    ) -> None:
        weights = _f64(weights)
        k, d = means.shape
        if weights.shape != (k,) or evecs.shape[:2] != (k, d) or evals.shape != (k, evecs.shape[2]):
            raise ValueError(
                f"inconsistent shapes: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                f"bases {tuple(evecs.shape)}, variances {tuple(evals.shape)}"
            )
        if not bool(torch.all(weights >= 0)) or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights.tolist()}")
        low = min(float(evals.min()), float(noise.min()))
        if low < -1e-12 * max(float(evals.abs().max()), 1.0):
            raise ValueError(f"covariances must be positive semi-definite, min eigenvalue {low}")
        r = evecs.shape[2]
        self.weights = weights / weights.sum()
        self.means = means
        self.evecs = evecs.contiguous()  # [K, d, r] orthonormal principal directions
        self.evals = evals.clamp(min=0.0)  # [K, r] variances along them
        self.noise = noise.clamp(min=0.0)  # [K] variance of the other d - r directions
        self.rank = r
        # All components' bases side by side, so projecting a batch is one matmul.
        self._basis = self.evecs.permute(1, 0, 2).reshape(d, k * r)  # [d, K*r]
        self._mean_coords = torch.einsum("kir,ki->kr", self.evecs, means)  # U_k^T mu_k [K, r]
        self._mean_sq = (means * means).sum(1)  # [K]
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
        u, lam, tau2 = self.evecs, self.evals, self.noise
        eye = torch.eye(self.dim, dtype=torch.float64)
        proj = torch.einsum("kir,kjr->kij", u, u)
        return torch.einsum("kir,kr,kjr->kij", u, lam, u) + tau2[:, None, None] * (eye - proj)

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
        rank: int | None = None,
        noise_std: float | None = None,
    ) -> GaussianMixture:
        """A random mixture, deterministic for a given seed.

        Means are drawn N(0, mean_scale^2 I) and weights Dirichlet(1). Each component has
        standard deviations log-uniform in `std_range` along `rank` random orthonormal
        directions (all d, axis-aligned when not `full`) and `noise_std` (default
        std_range[0] / 2) along the others.

        Args:
            dim, components: d and K.
            seed: generator seed.
            mean_scale: scale of the means.
            std_range: (low, high) of the principal standard deviations.
            full: random directions (full covariances) instead of the coordinate axes.
            rank: number of principal directions r <= d (default d).
            noise_std: standard deviation of the remaining d - r directions.
        """
        rank = dim if rank is None else rank
        if not 1 <= rank <= dim:
            raise ValueError(f"rank must be in [1, {dim}], got {rank}")
        g = torch.Generator().manual_seed(seed)
        means = mean_scale * torch.randn(components, dim, generator=g, dtype=torch.float64)
        lo, hi = math.log(std_range[0]), math.log(std_range[1])
        u = torch.rand(components, rank, generator=g, dtype=torch.float64)
        variances = torch.exp(2 * (lo + (hi - lo) * u))  # [K, r]
        weights = -torch.log(torch.rand(components, generator=g, dtype=torch.float64))
        if full:
            gauss = torch.randn(components, dim, rank, generator=g, dtype=torch.float64)
            q, r = torch.linalg.qr(gauss)  # [K, d, r] orthonormal columns
            bases = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # Haar
        else:
            bases = torch.eye(dim, dtype=torch.float64)[:, :rank].expand(components, dim, rank)
        noise_var = (std_range[0] / 2 if noise_std is None else noise_std) ** 2
        noise = torch.full((components,), noise_var, dtype=torch.float64)
        return cls.low_rank(weights, means, bases, variances, noise)

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
        u = self.evecs[comp]  # [n, d, r]
        coords = torch.einsum("nir,ni->nr", u, z)  # the part of z along U
        rest = z - torch.einsum("nir,nr->ni", u, coords)  # the part orthogonal to U
        along = torch.einsum("nir,nr->ni", u, coords * self.evals[comp].sqrt())
        return self.means[comp] + along + self.noise[comp].sqrt().unsqueeze(1) * rest

    def _flat(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x[0].numel() != self.dim:
            raise ValueError(
                f"x must be [B, ...] with {self.dim} values per sample, got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    def _posterior(self, x: Tensor, level: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pieces shared by the density and the denoiser.

        Returns:
            log w_k N(x; mu_k, Sigma_k + level^2 I) [B, K], coordinates z = U_k^T (x - mu_k)
            [B, K, r], the noisy variances lambda + level^2 [B or 1, K, r] and
            tau^2 + level^2 [B or 1, K].
        """
        b, k, d, r = x.shape[0], self.num_components, self.dim, self.rank
        level2 = (_f64(level) ** 2).reshape(-1, 1)  # [B or 1, 1]
        z = (x @ self._basis).reshape(b, k, r) - self._mean_coords  # [B, K, r]
        var = self.evals + level2.unsqueeze(-1)  # [B or 1, K, r]
        iso = self.noise + level2  # [B or 1, K]
        zz = z * z
        maha = (zz / var).sum(-1)  # [B, K]
        log_det = var.log().sum(-1)
        if r < d:  # the isotropic complement: |x - mu|^2 - |z|^2 over tau^2 + level^2
            dist2 = (x * x).sum(1, keepdim=True) - 2 * x @ self.means.T + self._mean_sq
            maha = maha + (dist2 - zz.sum(-1)).clamp(min=0) / iso
            log_det = log_det + (d - r) * iso.log()
        log_joint = self._log_weights - 0.5 * (maha + log_det + d * math.log(2 * math.pi))
        return log_joint, z, var, iso

    def log_prob(self, x: Tensor, level: Tensor | float = 0.0) -> Tensor:
        """log p(x) of the noisy marginal at `level` [B] (level 0: the data density)."""
        log_joint, _, _, _ = self._posterior(self._flat(x), level)
        return torch.logsumexp(log_joint, dim=1)

    def denoise(self, x: Tensor, level: Tensor | float) -> Tensor:
        """The exact posterior mean E[x0 | x] at noise level `level` (see the module docstring).

        With c_k = tau_k^2 / (tau_k^2 + level^2) the component term is
        (1 - c_k) mu_k + c_k x + U_k ((lambda_k / (lambda_k + level^2) - c_k) z_k), so a batch
        costs two matmuls with the stacked bases and O(B K r) elementwise work.

        Args:
            x: noisy samples on the level axis [B, ...] with d values per sample.
            level: a scalar or per-sample [B] noise level, > 0.
        Returns:
            E[x0 | x] shaped and typed like x.
        """
        flat = self._flat(x)
        b, k, r = flat.shape[0], self.num_components, self.rank
        log_joint, z, var, iso = self._posterior(flat, level)
        resp = torch.softmax(log_joint, dim=1)  # responsibilities, log-sum-exp stable [B, K]
        c = self.noise / iso  # [B or 1, K]
        gain = self.evals / var - c.unsqueeze(-1)  # [B or 1, K, r]
        coords = (gain * z).mul_(resp.unsqueeze(-1)).reshape(b, k * r)
        x0 = (resp * c).sum(1, keepdim=True) * flat + (resp * (1 - c)) @ self.means
        x0 = x0 + coords @ self._basis.T  # [B, d]
        return x0.reshape(x.shape).to(x.dtype)

    __call__ = denoise

    def score(self, x: Tensor, level: Tensor | float) -> Tensor:
        """grad_x log p(x; level) = (D(x, level) - x) / level^2 (Tweedie), like x."""
        level = _f64(level)
        lv = level.reshape(-1, *([1] * (x.ndim - 1))) if level.ndim else level
        denoised = self.denoise(x, level).to(torch.float64)
        return ((denoised - x.to(torch.float64)) / lv**2).to(x.dtype)

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
        """Integrate the probability-flow ODE from level_from to level_to with DOP853.

        In log-level time u = log(level) the ODE dx/dlevel = (x - D) / level becomes
        dx/du = x - D(x, e^u), smooth across the whole range; the batch is one state vector.

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
        """The samplers' end point convention: D(x(level_min), level_min), x from level_max.

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
            f"sample sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
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
    fourth moments; loose for mixtures, hence the default of 5 standard errors).

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


__all__ = ["GaussianMixture", "moments_close", "sliced_wasserstein"]
