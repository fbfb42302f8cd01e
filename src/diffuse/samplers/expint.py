"""Exponential-integrator weights shared by the DPM-Solver++ and UniPC samplers.

On the level axis, with lambda = -log(level) and the data prediction D, the probability-flow ODE
has the exact solution (Lu et al. 2022, "DPM-Solver++", eq. 9, with alpha = 1):

    x(lambda + h) = e^{-h} x(lambda) + int_0^h e^{-(h - s)} D(lambda + s) ds.

The stochastic variants (the SDE of DPM-Solver++, section 5, generalised by eta) integrate

    x' = e^{-k h} x + int_0^h k e^{-k (h - s)} D(lambda + s) ds + level' sqrt(1 - e^{-2 eta h}) z,

with k = 1 + eta (eta = 0 is the ODE). A multistep method replaces D by the polynomial through
the last few model outputs and integrates it exactly; the result is a weighted sum of those
outputs. All arithmetic here is on Python floats (no tensors, no device syncs).
"""

from __future__ import annotations

import math

import numpy as np


def phi_integrals(h: float, k: float, n_max: int) -> list[float]:
    """I_n = int_0^h k e^{-k (h - s)} s^n / n! ds for n = 0..n_max.

    Uses the series I_n = sum_{j>=1} (-1)^{j+1} k^j h^{n+j} / (n+j)! when k h is small (no
    cancellation) and the recursion I_n = h^n / n! - I_{n-1} / k, I_0 = 1 - e^{-k h}, otherwise.

    Args:
        h: step length in lambda, > 0.
        k: decay rate, > 0 (1 for the ODE, 1 + eta for the SDE family).
        n_max: highest n.
    Returns:
        [I_0, ..., I_{n_max}].
    """
    kh = k * h
    if kh < 0.5:
        out = []
        for n in range(n_max + 1):
            term = h**n / math.factorial(n)  # j = 0 factor, advanced by k h / (n + j) per term
            total = 0.0
            for j in range(1, 40):
                term *= -kh / (n + j)
                total -= term
                if abs(term) < 1e-18 * abs(total):
                    break
            out.append(total)
        return out
    out = [-math.expm1(-kh)]
    for n in range(1, n_max + 1):
        out.append(h**n / math.factorial(n) - out[-1] / k)
    return out


def integration_weights(nodes: list[float], h: float, k: float = 1.0) -> list[float]:
    """Weights w with int_0^h k e^{-k (h - s)} P(s) ds = sum_j w_j D_j.

    P is the polynomial of degree len(nodes) - 1 through (nodes[j], D_j): an exponential
    Adams-Bashforth rule when all nodes are <= 0 (DPM-Solver++ multistep, UniPC's predictor
    UniP with its linear system solved exactly), an Adams-Moulton-like rule when one node is h
    (UniPC's corrector UniC, Zhao et al. 2023, eq. 8).

    Args:
        nodes: lambda offsets of the model outputs from the start of the step (0 = current).
        h: step length in lambda, > 0.
        k: decay rate (1 for the ODE).
    Returns:
        one weight per node.
    """
    m = len(nodes)
    integrals = phi_integrals(h, k, m - 1)
    # In the scaled variable u = s / h, P(s) = sum_n a_n u^n with V a = D, V[j, n] = (s_j / h)^n,
    # and int k e^{-k(h-s)} u^n ds = n! I_n / h^n =: g_n. So the integral is g^T V^{-1} D.
    scaled = np.asarray(nodes, dtype=np.float64) / h
    vander = scaled[:, None] ** np.arange(m)[None, :]  # [m nodes, m powers]
    g = np.array([math.factorial(n) * integrals[n] / h**n for n in range(m)])
    return np.linalg.solve(vander.T, g).tolist()
