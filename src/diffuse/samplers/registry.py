"""Samplers and schedules by name: what the CLI's `--sampler` and `--schedule` take.

An explicit table (no lookup through globals): adding a sampler means adding a line here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import Tensor

from diffuse.samplers.multistep import deis, dpmpp_2m, dpmpp_3m, unipc
from diffuse.samplers.ode import ddim, euler, heun
from diffuse.samplers.schedules import flow_shift, karras, loglinear, uniform_t
from diffuse.samplers.stochastic import (
    ddpm_ancestral,
    dpmpp_2m_sde,
    dpmpp_3m_sde,
    euler_ancestral,
)

Sampler = Callable[..., Tensor]
Schedule = Callable[..., Tensor]


def _named(func: Callable[..., Tensor], name: str, **options: object) -> Callable[..., Tensor]:
    """`func` with some keyword options fixed, keeping its docstring under a new name."""
    bound = functools.partial(func, **options)
    functools.update_wrapper(bound, func)
    bound.__name__ = name  # type: ignore[attr-defined]
    return bound


SAMPLERS: Mapping[str, Sampler] = MappingProxyType(
    {
        "euler": euler,
        "heun": heun,
        "ddim": ddim,
        "dpmpp_2m": dpmpp_2m,
        "dpmpp_3m": dpmpp_3m,
        "unipc": unipc,  # UniP-2 + UniC: order 3, diffusers' UniPCMultistep default
        "unipc_1": _named(unipc, "unipc_1", order=1),  # UniP-1 + UniC: order 2
        "unipc_3": _named(unipc, "unipc_3", order=3),  # UniP-3 + UniC: order 4
        "deis": deis,  # eps polynomial in log-level, order 3
        "deis_2": _named(deis, "deis_2", order=2),
        "ddpm_ancestral": ddpm_ancestral,
        "euler_ancestral": euler_ancestral,
        "dpmpp_2m_sde": dpmpp_2m_sde,
        "dpmpp_3m_sde": dpmpp_3m_sde,
    }
)
"""Sampler functions by name; every one is called as f(denoise, x, levels, **options)."""

SCHEDULES: Mapping[str, Schedule] = MappingProxyType(
    {
        "karras": karras,
        "loglinear": loglinear,
        "exponential": loglinear,  # the same schedule under k-diffusion's name
        "uniform_t": uniform_t,
        "trailing": _named(uniform_t, "trailing", spacing="trailing"),
        "leading": _named(uniform_t, "leading", spacing="leading"),
        "flow_shift": flow_shift,
    }
)
"""Schedule functions by name; every one is called as f(process, steps, **options)."""

STOCHASTIC: frozenset[str] = frozenset(
    {"ddpm_ancestral", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde"}
)
"""Names of the samplers that draw noise at every step (ddim and heun only with options)."""


def _lookup(table: Mapping[str, Callable[..., Tensor]], kind: str, name: str) -> Callable:
    try:
        return table[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(table))
        raise ValueError(f"unknown {kind} {name!r}; valid: {valid}") from None


def get_sampler(name: str) -> Sampler:
    """The sampler called `name`; ValueError listing the valid names otherwise."""
    return _lookup(SAMPLERS, "sampler", name)


def get_schedule(name: str) -> Schedule:
    """The schedule called `name`; ValueError listing the valid names otherwise."""
    return _lookup(SCHEDULES, "schedule", name)
