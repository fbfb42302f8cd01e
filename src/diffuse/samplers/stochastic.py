"""Stochastic samplers on the level axis: DDPM ancestral, Euler ancestral, DPM-Solver++ SDE.

On the level axis the forward process is x(level) = x0 + level * eps, a VE process, so DDPM's
posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020, eq. 6-7), divided by alpha_{t-1}, reads

    x' ~ N(x0 + (level'/level)^2 (x - x0), level'^2 (1 - (level'/level)^2)),

for every process: VP, VE, EDM and flows alike. All samplers take `noise(x)` (default
`torch.randn_like`); pass a `SeededNoise` for per-sample reproducibility.
"""

from __future__ import annotations

import math

from torch import Tensor

from diffuse.samplers.base import (
    Callback,
    DenoiseFn,
    NoiseFn,
    check_fraction,
    check_inputs,
    default_noise,
    emit,
)
from diffuse.samplers.multistep import exponential_multistep
from diffuse.samplers.ode import level_tensor


def ddpm_ancestral(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """DDPM ancestral sampling: draw x' from the posterior q(x' | x, x0 = D(x)) each step.

    Ho et al. 2020, eq. 6-7 (the posterior variance beta-tilde), on the level axis. With the
    1000 levels of a DDPM process (`uniform_t(DiscreteVP(), 1000)`) this is DDPM's sampler; on
    any grid it equals `ddim(eta=1)` and `euler_ancestral(eta=1)`.

    Args:
        denoise: denoise(x, level) -> x0 estimate.
        x: starting sample [B, ...] at levels[0].
        levels: 1-D float64 decreasing levels ending in 0.
        callback: called after every step with a `StepInfo`; may return a replacement x.
        noise: noise(x) -> standard normal like x (default `torch.randn_like`).
    Returns:
        the final sample [B, ...].
    """
    sig = check_inputs(x, levels)
    noise = noise or default_noise
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        if s_next == 0.0:
            x = denoised
        else:
            ratio2 = (s_next / s) ** 2
            mean = denoised + ratio2 * (x - denoised)  # posterior mean, eq. 7
            std = s_next * math.sqrt(1.0 - ratio2)  # sqrt(beta-tilde) / alpha_{t-1}
            x = mean + std * noise(x)
        x, _ = emit(callback, i, sig, x, denoised)
    return x


def euler_ancestral(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """Euler ancestral: an Euler step down to level_down, then fresh noise up to level'.

    level_up = min(level', eta * level' sqrt(1 - (level'/level)^2)),
    level_down = sqrt(level'^2 - level_up^2) (the split k-diffusion uses, derived from DDIM's
    eq. 16); x' = D + level_down (x - D) / level + level_up s_noise z. eta = 1 is DDPM's
    posterior, eta = 0 plain Euler.

    Args:
        denoise, x, levels, callback, noise: as in `ddpm_ancestral`.
        eta: amount of fresh noise, >= 0.
        s_noise: scale of the added noise.
    Returns:
        the final sample [B, ...].
    """
    check_fraction("eta", eta)
    check_fraction("s_noise", s_noise)
    sig = check_inputs(x, levels)
    noise = noise or default_noise
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        if s_next == 0.0:
            x = denoised
        else:
            s_up = min(s_next, eta * s_next * math.sqrt(1.0 - (s_next / s) ** 2))
            s_down = math.sqrt(s_next * s_next - s_up * s_up)
            x = denoised + (s_down / s) * (x - denoised)
            if s_up > 0.0:
                x = x + (s_up * s_noise) * noise(x)
        x, _ = emit(callback, i, sig, x, denoised)
    return x


def dpmpp_2m_sde(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", section 5), generalised by eta.

    x' = e^{-(1+eta) h} x + w_i D_i + w_{i-1} D_{i-1} + level' sqrt(1 - e^{-2 eta h}) z, with the
    line through the last two outputs integrated exactly (`exponential_multistep`, order 2).

    Args:
        denoise, x, levels, callback, noise: as in `ddpm_ancestral`.
        eta: 0 gives the ODE solver, 1 the reverse SDE.
        s_noise: scale of the added noise.
    Returns:
        the final sample [B, ...].
    """
    return exponential_multistep(
        denoise, x, levels, order=2, eta=eta, s_noise=s_noise, callback=callback, noise=noise
    )


def dpmpp_3m_sde(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """SDE-DPM-Solver++(3M): as `dpmpp_2m_sde` with the quadratic through three outputs.

    Args:
        denoise, x, levels, callback, noise: as in `ddpm_ancestral`.
        eta: 0 gives the ODE solver, 1 the reverse SDE.
        s_noise: scale of the added noise.
    Returns:
        the final sample [B, ...].
    """
    return exponential_multistep(
        denoise, x, levels, order=3, eta=eta, s_noise=s_noise, callback=callback, noise=noise
    )
