"""Numerical identities between samplers on the level axis (float64, exact-score mixture)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from diffuse.denoiser import Denoiser
from diffuse.processes import DiscreteVP, RectifiedFlow
from diffuse.samplers import (
    ddim,
    ddpm_ancestral,
    deis,
    dpmpp_2m,
    dpmpp_2m_sde,
    dpmpp_3m,
    euler,
    euler_ancestral,
    exponential_multistep,
    flow_shift,
    karras,
    uniform_t,
    unipc,
)


def _noise(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=g, dtype=x.dtype)


@pytest.fixture
def start(smooth_mixture):
    x = 10.0 * torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return smooth_mixture, x


@pytest.mark.parametrize(
    "levels",
    [
        karras(None, 12, level_min=0.02, level_max=10.0),
        uniform_t(DiscreteVP(), 25, spacing="trailing"),
    ],
    ids=["karras", "ddpm-trailing"],
)
def test_ddim_eta0_is_euler(start, levels):
    mixture, x = start
    x = x * float(levels[0]) / 10.0
    a = ddim(mixture.denoise, x, levels, eta=0.0)
    b = euler(mixture.denoise, x, levels)
    assert float((a - b).abs().max()) < 1e-10


class ExactVelocity(nn.Module):
    """A "network" that returns the exact flow-matching velocity u = eps - x0 of the mixture.

    It sees what a velocity model sees: x_t = (1 - t) x on the level axis and c_noise = 1000 t.
    """

    def __init__(self, mixture) -> None:
        super().__init__()
        self.mixture = mixture

    def forward(self, x_t: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        t = (c_noise / 1000.0).reshape(-1, 1)
        level = t / (1 - t)
        x = x_t / (1 - t)
        x0 = self.mixture.denoise(x, level.reshape(-1))
        eps = (x - x0) / level
        return eps - x0


def test_flow_matching_euler_is_euler_on_the_level_axis(smooth_mixture):
    """x_{t'} = x_t + (t' - t) u(x_t, t), mapped to x = x_t / (1 - t), equals `euler`."""
    flow = RectifiedFlow(shift=3.0)
    levels = flow_shift(flow, 16)
    t = (levels / (1 + levels)).tolist()  # flow time of each level
    x_level = float(levels[0]) * torch.randn(
        5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    net = ExactVelocity(smooth_mixture)
    # The native loop in flow time with the network's velocity.
    x_t = x_level * (1 - t[0])
    for t_now, t_next in zip(t[:-1], t[1:]):
        c_noise = torch.full((x_t.shape[0],), 1000.0 * t_now, dtype=torch.float64)
        x_t = x_t + (t_next - t_now) * net(x_t, c_noise)
    # The same network behind the Denoiser, sampled by the level-axis Euler.
    denoiser = Denoiser(net, flow, "velocity")
    out = euler(denoiser, x_level, levels)
    assert float((out - x_t).abs().max()) < 1e-10


def test_ddpm_ancestral_is_ddim_eta1_and_euler_ancestral(start):
    mixture, x = start
    levels = karras(None, 20, level_min=0.02, level_max=10.0)
    a = ddpm_ancestral(mixture.denoise, x, levels, noise=_noise(0))
    b = ddim(mixture.denoise, x, levels, eta=1.0, noise=_noise(0))
    c = euler_ancestral(mixture.denoise, x, levels, eta=1.0, noise=_noise(0))
    d = exponential_multistep(mixture.denoise, x, levels, order=1, eta=1.0, noise=_noise(0))
    for other in (b, c, d):
        assert float((a - other).abs().max()) < 1e-10


def test_zero_eta_stochastic_samplers_are_deterministic(start):
    mixture, x = start
    levels = karras(None, 10, level_min=0.02, level_max=10.0)
    for sampler, reference in [
        (functools.partial(euler_ancestral, eta=0.0), euler),
        (
            functools.partial(dpmpp_2m_sde, eta=0.0),
            functools.partial(exponential_multistep, order=2),
        ),
    ]:
        a = sampler(mixture.denoise, x, levels, noise=_noise(0))
        assert float((a - reference(mixture.denoise, x, levels)).abs().max()) < 1e-10


@pytest.mark.parametrize(
    "sampler",
    [
        dpmpp_2m,
        dpmpp_3m,
        unipc,
        deis,
        functools.partial(unipc, order=3),
        functools.partial(deis, order=1),
    ],
    ids=["dpmpp_2m", "dpmpp_3m", "unipc", "deis", "unipc_3", "deis_1"],
)
def test_first_order_step_is_euler(start, sampler):
    """With one step before the jump to zero, every multistep method is Euler / DDIM."""
    mixture, x = start
    levels = torch.tensor([10.0, 0.5, 0.0], dtype=torch.float64)
    expected = euler(mixture.denoise, x, levels)
    assert float((sampler(mixture.denoise, x, levels) - expected).abs().max()) < 1e-12


@pytest.mark.parametrize(
    "sampler",
    [
        functools.partial(deis, order=1),
        functools.partial(exponential_multistep, order=1),
        functools.partial(unipc, order=1, corrector=False),
    ],
    ids=["deis_1", "exp_multistep_1", "unip_1"],
)
def test_first_order_members_are_euler(start, sampler):
    mixture, x = start
    levels = karras(None, 15, level_min=0.02, level_max=10.0)
    expected = euler(mixture.denoise, x, levels)
    assert float((sampler(mixture.denoise, x, levels) - expected).abs().max()) < 1e-10
