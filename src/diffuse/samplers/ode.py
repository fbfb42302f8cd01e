"""Single-step samplers of the probability-flow ODE on the level axis: Euler, DDIM, Heun.

With x = x0 + level * eps the probability-flow ODE is (Karras et al. 2022, eq. 4 with s = 1)

    dx / dlevel = (x - D(x, level)) / level,

where D is the denoiser. Every sampler here ends with the same "jump to zero": a step to level 0
returns D(x, levels[-2]) exactly.
"""

from __future__ import annotations

import math

import torch
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


def level_tensor(level: float) -> Tensor:
    """The 0-dim float64 CPU tensor a denoise function receives."""
    return torch.tensor(level, dtype=torch.float64)


def euler(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without step 9).

    x_{i+1} = x_i + (level_{i+1} - level_i) (x_i - D_i) / level_i.

    Args:
        denoise: denoise(x, level) -> x0 estimate.
        x: starting sample [B, ...] at levels[0] (level_max * eps for generation).
        levels: 1-D float64 decreasing levels ending in 0 (from a schedule).
        callback: called after every step with a `StepInfo`; may return a replacement x.
        noise: unused (deterministic); accepted so every sampler has the same signature.
    Returns:
        the final sample [B, ...] at level 0.
    """
    sig = check_inputs(x, levels)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        # The step to 0 is the jump to the denoised estimate, the ODE's end point.
        x = denoised if s_next == 0.0 else x + ((s_next - s) / s) * (x - denoised)
        x, _ = emit(callback, i, sig, x, denoised)
    return x


def ddim(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    eta: float = 0.0,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12 and 16), written on the level axis.

    Dividing eq. 12 by alpha_{t-1} gives, with eps_hat = (x - D) / level and
    s = eta * (level' / level) * sqrt(level^2 - level'^2) (eq. 16 divided by alpha_{t-1}):

        x' = D + sqrt(level'^2 - s^2) * eps_hat + s * z.

    With eta = 0 this is exactly the Euler step; with eta = 1 it is DDPM's ancestral step.

    Args:
        denoise, x, levels, callback: as in `euler`.
        eta: stochasticity in [0, 1]; 0 is deterministic DDIM.
        noise: noise(x) -> standard normal like x (default `torch.randn_like`).
    Returns:
        the final sample [B, ...].
    """
    check_fraction("eta", eta, 0.0, 1.0)
    sig = check_inputs(x, levels)
    noise = noise or default_noise
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        if s_next == 0.0:
            x = denoised
        else:
            s_up = eta * (s_next / s) * math.sqrt(s * s - s_next * s_next)
            s_dir = math.sqrt(max(s_next * s_next - s_up * s_up, 0.0))
            eps_hat = (x - denoised) / s
            x = denoised + s_dir * eps_hat
            if s_up > 0.0:
                x = x + s_up * noise(x)
        x, _ = emit(callback, i, sig, x, denoised)
    return x


def heun(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """Heun's second-order method with EDM's stochastic churn (Karras et al. 2022, Alg. 2).

    Per step: raise the level to level_hat = level (1 + gamma), gamma = min(S_churn / N,
    sqrt(2) - 1) inside [S_tmin, S_tmax], by adding sqrt(level_hat^2 - level^2) S_noise z; take
    an Euler step to level'; then correct with the slope at level' (trapezoidal rule). The step to
    level 0 is a plain Euler step (the jump to D). N steps cost 2N - 1 denoiser calls.

    Args:
        denoise, x, levels, callback: as in `euler`.
        s_churn: total churn S_churn >= 0; 0 gives the deterministic Heun sampler.
        s_tmin, s_tmax: the level interval where churn applies.
        s_noise: scale of the added noise (S_noise, slightly above 1 in EDM's tuned settings).
        noise: noise(x) -> standard normal like x (default `torch.randn_like`).
    Returns:
        the final sample [B, ...].
    """
    check_fraction("s_churn", s_churn)
    check_fraction("s_noise", s_noise)
    sig = check_inputs(x, levels)
    noise = noise or default_noise
    steps = len(sig) - 1
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        gamma = min(s_churn / steps, math.sqrt(2.0) - 1.0) if s_tmin <= s <= s_tmax else 0.0
        s_hat = s * (1.0 + gamma)
        if gamma > 0.0:
            # Alg. 2 lines 5-6: move up the noise axis so the sample sits at level s_hat.
            x = x + math.sqrt(s_hat * s_hat - s * s) * s_noise * noise(x)
        denoised = denoise(x, level_tensor(s_hat))
        if s_next == 0.0:
            x = denoised
        else:
            slope = (x - denoised) / s_hat
            x_euler = x + (s_next - s_hat) * slope
            denoised = denoise(x_euler, level_tensor(s_next))
            slope_next = (x_euler - denoised) / s_next
            x = x + (s_next - s_hat) * 0.5 * (slope + slope_next)
        x, _ = emit(callback, i, sig, x, denoised)
    return x
