"""Multistep exponential integrators on the level axis: DPM-Solver++(2M), (3M) and UniPC.

All three reuse earlier model outputs D_j (a local list, the method's whole "state") to raise the
order at one denoiser call per step. With lambda = -log(level) and h = lambda_{i+1} - lambda_i,
the first-order member of the family is x' = (level'/level) x + (1 - level'/level) D, which is
DDIM and the Euler step (see `expint` for the exact solution these rules approximate). Warm-up
uses lower orders until enough outputs exist; the step to level 0 returns the latest D.
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
from diffuse.samplers.expint import integration_weights
from diffuse.samplers.ode import level_tensor


def _check_order(order: int, allowed: tuple[int, ...]) -> None:
    if order not in allowed:
        raise ValueError(f"order must be one of {allowed}, got {order!r}")


def _weighted(x: Tensor, scale: float, weights: list[float], outputs: list[Tensor]) -> Tensor:
    """scale * x + sum_j weights[j] * outputs[j]."""
    out = x * scale
    for w, d in zip(weights, outputs):
        out = out + w * d
    return out


def dpmpp_2m(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), on the level axis.

    With r = h_{i-1} / h_i the step is
        D_mix = (1 + 1 / (2r)) D_i - 1 / (2r) D_{i-1},
        x_{i+1} = (level_{i+1} / level_i) x_i + (1 - e^{-h_i}) D_mix,
    and the first step (no history) is DPM-Solver++(1), i.e. DDIM.

    Args:
        denoise: denoise(x, level) -> x0 estimate.
        x: starting sample [B, ...] at levels[0].
        levels: 1-D float64 decreasing levels ending in 0.
        callback: called after every step with a `StepInfo`; may return a replacement x.
        noise: unused (deterministic); accepted so every sampler has the same signature.
    Returns:
        the final sample [B, ...].
    """
    sig = check_inputs(x, levels)
    previous: tuple[float, Tensor] | None = None  # (h of the previous step, its D)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        if s_next == 0.0:
            x = denoised
        else:
            h = math.log(s / s_next)
            mixed = denoised
            if previous is not None:
                r = previous[0] / h
                mixed = (1.0 + 0.5 / r) * denoised - (0.5 / r) * previous[1]
            x = (s_next / s) * x + (-math.expm1(-h)) * mixed
            previous = (h, denoised)
        x, _ = emit(callback, i, sig, x, denoised)
    return x


def exponential_multistep(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    order: int = 3,
    eta: float = 0.0,
    s_noise: float = 1.0,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """Exponential Adams-Bashforth multistep in data prediction, ODE or SDE.

    x_{i+1} = e^{-k h} x_i + sum_j w_j D_j + level_{i+1} sqrt(1 - e^{-2 eta h}) s_noise z,
    k = 1 + eta, where w integrates the polynomial through the last `order` outputs D_j against
    k e^{-k(h-s)} exactly (`expint.integration_weights`). eta = 0 is the probability-flow ODE
    (DPM-Solver++(3M) for order 3, Lu et al. 2022, section 4 with a quadratic in lambda); eta = 1
    the reverse SDE of SDE-DPM-Solver++ (Lu et al. 2022, section 5), whose first-order step is
    DDPM's ancestral step. Order q converges at order q for eta = 0.

    Args:
        denoise, x, levels, callback: as in `dpmpp_2m`.
        order: 1, 2 or 3 (number of model outputs in the interpolant).
        eta: 0 (ODE) to 1 (SDE) and beyond; the noise added per step grows with it.
        s_noise: scale of the added noise.
        noise: noise(x) -> standard normal like x (default `torch.randn_like`).
    Returns:
        the final sample [B, ...].
    """
    _check_order(order, (1, 2, 3))
    check_fraction("eta", eta)
    check_fraction("s_noise", s_noise)
    sig = check_inputs(x, levels)
    noise = noise or default_noise
    k = 1.0 + eta
    history: list[tuple[float, Tensor]] = []  # (lambda_j, D_j), newest last
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        lam = -math.log(s)
        history = [*history[-(order - 1) :], (lam, denoised)] if order > 1 else [(lam, denoised)]
        if s_next == 0.0:
            x = denoised
        else:
            h = math.log(s / s_next)
            weights = integration_weights([lj - lam for lj, _ in history], h, k)
            x = _weighted(x, math.exp(-k * h), weights, [d for _, d in history])
            if eta > 0.0:
                x = x + (s_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise) * noise(x)
        x, _ = emit(callback, i, sig, x, denoised)
    return x


def dpmpp_3m(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """DPM-Solver++(3M): third-order multistep on the probability-flow ODE.

    The quadratic through D_i, D_{i-1}, D_{i-2} in lambda is integrated exactly against e^{-(h-s)}
    (Lu et al. 2022, eq. 9; `exponential_multistep` with order 3, eta 0). Warm-up: orders 1, 2,
    as in DPM-Solver++. The first-order first step has a local error O(h^2), so on a schedule
    with equal steps in log-level the global order falls back to 2 at very many steps; on Karras
    schedules, whose first steps are in the nearly linear high-noise region, order 3 holds.

    Args:
        as in `dpmpp_2m`.
    Returns:
        the final sample [B, ...].
    """
    return exponential_multistep(denoise, x, levels, order=3, eta=0.0, callback=callback)


def unipc(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    order: int = 2,
    corrector: bool = True,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """UniPC (Zhao et al. 2023): the UniP-p predictor with the UniC corrector, data prediction.

    Predictor (UniP-p): x~_{i+1} = e^{-h} x_i + sum_j w_j D_j over the last p outputs.
    Corrector (UniC): after the model call D_{i+1} = D(x~_{i+1}) (which the next step reuses),
    x_{i+1} = e^{-h} x_i + sum_j w^c_j D_j over the same outputs plus D_{i+1}. The weights
    integrate the interpolating polynomial exactly, which solves the paper's linear system
    R_p a = g_p (eq. 7-8) for any B(h). The corrector costs no extra call and raises the order
    from p to p + 1 (the paper's Theorem 3.3); `order` is p, as in the paper and in diffusers'
    `solver_order`.

    The callback sees the predicted x~_{i+1}. If it returns a replacement, the model is called on
    the replacement and the corrector is skipped for that step (it would overwrite it).

    Args:
        denoise, x, levels, callback: as in `dpmpp_2m`.
        order: predictor order p in {1, 2, 3}; with the corrector the method has order p + 1.
        corrector: apply UniC (False gives the plain UniP-p multistep of order p).
        noise: unused (deterministic).
    Returns:
        the final sample [B, ...].
    """
    _check_order(order, (1, 2, 3))
    sig = check_inputs(x, levels)
    steps = len(sig) - 1
    lam = -math.log(sig[0])
    history: list[tuple[float, Tensor]] = [(lam, denoise(x, level_tensor(sig[0])))]
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        if s_next == 0.0:
            x = history[-1][1]
            x, _ = emit(callback, i, sig, x, x)
            break
        lam, lam_next = -math.log(s), -math.log(s_next)
        h = lam_next - lam
        used = history[-order:]
        outputs = [d for _, d in used]
        decay = math.exp(-h)
        weights = integration_weights([lj - lam for lj, _ in used], h)
        x_pred = _weighted(x, decay, weights, outputs)
        x_pred, replaced = emit(callback, i, sig, x_pred, history[-1][1])
        denoised = denoise(x_pred, level_tensor(s_next))
        if corrector and not replaced:
            nodes = [lj - lam for lj, _ in used] + [h]
            weights = integration_weights(nodes, h)
            x = _weighted(x, decay, weights, [*outputs, denoised])
        else:
            x = x_pred
        history = (
            [*history[-(order - 1) :], (lam_next, denoised)]
            if order > 1
            else [(lam_next, denoised)]
        )
    return x


def deis(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    order: int = 3,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """DEIS with log-rho polynomials (Zhang & Chen 2023, "DEIS", section 4, rhoAB in log rho).

    The probability-flow ODE on the level axis is dx/dlevel = eps(x, level) with
    eps = (x - D) / level. DEIS extrapolates eps with the polynomial in log(level) through the
    last `order` outputs and integrates it exactly over [level, level']:
        x' = x + sum_j w_j eps_j,  w = level' * integration_weights(nodes, h, k=-1),
    since d level = -level d lambda and level / level' = e^{h}. The first-order member is Euler.

    Args:
        denoise, x, levels, callback: as in `dpmpp_2m`.
        order: 1 to 4 (number of outputs in the interpolant); order q converges at order q.
        noise: unused (deterministic).
    Returns:
        the final sample [B, ...].
    """
    _check_order(order, (1, 2, 3, 4))
    sig = check_inputs(x, levels)
    history: list[tuple[float, Tensor]] = []  # (lambda_j, eps_j), newest last
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = denoise(x, level_tensor(s))
        lam = -math.log(s)
        history = (
            [*history[-(order - 1) :], (lam, (x - denoised) / s)]
            if order > 1
            else [(lam, (x - denoised) / s)]
        )
        if s_next == 0.0:
            x = denoised
        else:
            h = math.log(s / s_next)
            weights = integration_weights([lj - lam for lj, _ in history], h, -1.0)
            x = _weighted(x, 1.0, [s_next * w for w in weights], [e for _, e in history])
        x, _ = emit(callback, i, sig, x, denoised)
    return x
