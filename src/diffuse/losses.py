"""The denoising training loss, written once against the Denoiser."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffuse.denoiser import Cond, Denoiser, natural_x0_weight
from diffuse.processes.base import broadcast_to

Weighting = Literal["natural", "process", "min_snr"]


def denoising_loss(
    denoiser: Denoiser,
    x0: Tensor,
    cond: Cond = None,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    weighting: Weighting = "natural",
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """Per-sample denoising loss: weighted MSE between the raw output and its target.

    The raw-output MSE weights the squared x0 error by w_nat(level) = 1 / c_out^2. Other
    weightings multiply it by w(level) / w_nat(level):
      - "natural": the parametrisation's own MSE (eps MSE for eps, velocity MSE for flows ...);
      - "process": the process's recommended x0 weight (`NoiseProcess.loss_weight`);
      - "min_snr": x0 weight min(SNR, gamma) with SNR = 1 / level^2 (Hang et al. 2023, eq. 8).

    Args:
        denoiser: the wrapped network.
        x0: clean training data [B, ...].
        cond: conditioning passed to the network.
        t: process times [B]; drawn from the process's training density when None.
        noise: standard normal noise shaped like x0; drawn when None.
        generator: random generator for t and noise when they are drawn here.
        weighting: see above.
        min_snr_gamma: gamma for "min_snr".
    Returns:
        losses [B] (mean over all non-batch dimensions), in float32 or x0's dtype.
    """
    if weighting not in ("natural", "process", "min_snr"):
        raise ValueError(f"unknown weighting {weighting!r}; valid: natural, process, min_snr")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values")
    process = denoiser.process
    batch = x0.shape[0]
    if t is None:
        t = process.sample_t(batch, generator=generator)
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    if t.shape != (batch,):
        raise ValueError(f"t must have shape [{batch}], got {tuple(t.shape)}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    level = process.level(t)  # [B]
    x = x0 + broadcast_to(level, x0) * noise  # the level axis: x = x0 + level * eps
    coeffs = denoiser.coefficients(level, x0)
    raw = denoiser.raw(x, coeffs, cond)
    target = coeffs.target(x, x0)
    per_sample = (raw - target).pow(2).flatten(1).mean(dim=1)  # [B]
    if weighting == "natural":
        return per_sample
    w_nat = natural_x0_weight(coeffs).flatten(1)[:, 0]  # [B]
    if weighting == "process":
        wanted = process.loss_weight(level).to(per_sample)
    else:
        wanted = torch.clamp(1.0 / level**2, max=min_snr_gamma).to(per_sample)
    return per_sample * wanted / w_nat
