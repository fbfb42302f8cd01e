"""Samplers: stateless functions over (denoise, x, levels) on the level axis.

levels = karras(process, steps)                      # 1-D float64, ends in 0
noise = SeededNoise(seeds)                            # per-sample reproducible
x = noise.initial(shape) * levels[0]
x0 = dpmpp_2m(denoise, x, levels, callback=progress)  # or get_sampler("dpmpp_2m")
"""

from diffuse.samplers.base import Callback, DenoiseFn, NoiseFn, StepInfo
from diffuse.samplers.bespoke import (
    BespokeCoefficients,
    Candidate,
    bespoke,
    fit_bespoke,
    fit_candidates,
    fit_candidates_stratified,
    fit_solver,
    initial_coefficients,
)
from diffuse.samplers.fit import (
    fit_schedule,
    reference_endpoints,
    stratified_noises,
    weighted_mse,
)
from diffuse.samplers.multistep import deis, dpmpp_2m, dpmpp_3m, exponential_multistep, unipc
from diffuse.samplers.noise import SeededNoise
from diffuse.samplers.ode import ddim, euler, heun
from diffuse.samplers.registry import (
    SAMPLERS,
    SCHEDULES,
    STOCHASTIC,
    get_sampler,
    get_schedule,
)
from diffuse.samplers.schedules import flow_shift, karras, loglinear, uniform_t
from diffuse.samplers.stochastic import (
    ddpm_ancestral,
    dpmpp_2m_sde,
    dpmpp_3m_sde,
    euler_ancestral,
)

__all__ = [
    "SAMPLERS",
    "BespokeCoefficients",
    "Candidate",
    "SCHEDULES",
    "STOCHASTIC",
    "Callback",
    "DenoiseFn",
    "NoiseFn",
    "SeededNoise",
    "StepInfo",
    "bespoke",
    "ddim",
    "ddpm_ancestral",
    "deis",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m",
    "dpmpp_3m_sde",
    "euler",
    "euler_ancestral",
    "exponential_multistep",
    "fit_bespoke",
    "fit_candidates",
    "fit_candidates_stratified",
    "fit_schedule",
    "fit_solver",
    "flow_shift",
    "get_sampler",
    "get_schedule",
    "heun",
    "initial_coefficients",
    "karras",
    "loglinear",
    "reference_endpoints",
    "uniform_t",
    "stratified_noises",
    "unipc",
    "weighted_mse",
]
