"""Noise processes: the level axis, inverses, ranges and training densities."""

import math

import pytest
import torch

from diffuse.processes import (
    EDM,
    VE,
    CosineVP,
    DiscreteVP,
    RectifiedFlow,
    add_noise,
    resolution_shift,
    shift_time,
)

PROCESSES = [
    DiscreteVP(),
    DiscreteVP("scaled_linear"),
    CosineVP(),
    VE(),
    EDM(),
    RectifiedFlow(),
    RectifiedFlow(shift=3.0),
]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: repr(p))
def test_level_is_sigma_over_alpha_and_inverts(process):
    t = process.sample_t(256, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float64 and t.shape == (256,)
    assert float(t.min()) >= process.t_min - 1e-12 or isinstance(process, EDM)
    level = process.level(t)
    torch.testing.assert_close(level, process.sigma(t) / process.alpha(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(process.t_from_level(level), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(process.alpha_from_level(level), process.alpha(t), rtol=1e-9, atol=0)
    assert 0 < process.level_min < process.level_max


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: repr(p))
def test_add_noise_matches_level_axis(process):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = process.sample_t(5, gen)
    xt = add_noise(process, x0, t, noise)
    alpha = process.alpha(t).reshape(-1, 1, 1, 1)
    level = process.level(t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(xt / alpha, x0 + level * noise)


def test_add_noise_rejects_mismatched_noise():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        add_noise(EDM(), torch.zeros(2, 4), torch.ones(2), torch.zeros(2, 3))


def test_ddpm_tables_match_published_values():
    # Linear DDPM: bar-alpha_999 ~ 4.04e-5 (Ho et al. 2020); SD scaled-linear: ~ 4.66e-3.
    assert math.isclose(float(DiscreteVP().alphas_cumprod[-1]), 4.036e-5, rel_tol=1e-3)
    sd = DiscreteVP("scaled_linear")
    assert math.isclose(float(sd.alphas_cumprod[-1]), 4.660e-3, rel_tol=1e-3)
    assert math.isclose(sd.level_max, 14.6146, rel_tol=1e-4)


def test_vp_processes_preserve_variance():
    for process in (DiscreteVP(), CosineVP()):
        t = process.sample_t(100, torch.Generator().manual_seed(2))
        total = process.alpha(t) ** 2 + process.sigma(t) ** 2
        torch.testing.assert_close(total, torch.ones_like(total))


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: repr(p))
def test_initial_std_is_the_prior_on_the_level_axis(process):
    """VP processes start from x_T ~ N(0, I), i.e. std 1 / alpha = sqrt(1 + level^2) on the
    level axis; the others from level * eps. Only DiscreteVP may stop above level 0."""
    level = process.level_max
    vp = isinstance(process, (DiscreteVP, CosineVP))
    alpha = float(process.alpha_from_level(torch.tensor(level, dtype=torch.float64)))
    want = 1 / alpha if vp else level
    assert process.initial_std(level) == pytest.approx(want, rel=1e-9)
    assert process.final_level == 0.0
    stopping = DiscreteVP("scaled_linear", stop_at_first_timestep=True)
    assert stopping.final_level == pytest.approx(stopping.level_min)


def test_edm_training_density_is_lognormal():
    process = EDM()
    sigma = process.sample_t(200_000, torch.Generator().manual_seed(3))
    log_sigma = sigma.log()
    assert abs(float(log_sigma.mean()) - process.p_mean) < 0.02
    assert abs(float(log_sigma.std()) - process.p_std) < 0.02


def test_flow_shift_multiplies_level():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    shifted = shift_time(t, 3.0)
    flow = RectifiedFlow()
    torch.testing.assert_close(flow.level(shifted), 3.0 * flow.level(t))
    assert resolution_shift(256) == pytest.approx(math.exp(0.5))
    assert resolution_shift(4096) == pytest.approx(math.exp(1.15))


def test_flow_training_density_is_logit_normal():
    t = RectifiedFlow().sample_t(200_000, torch.Generator().manual_seed(4))
    logit = torch.log(t / (1 - t))
    assert abs(float(logit.mean())) < 0.02
    assert abs(float(logit.std()) - 1.0) < 0.02


def test_velocity_derivatives_autograd_match_closed_form():
    flow = RectifiedFlow()
    t = torch.linspace(0.1, 0.9, 7, dtype=torch.float64)
    d_alpha, d_sigma = super(RectifiedFlow, flow).alpha_sigma_derivatives(t)
    torch.testing.assert_close(d_alpha, -torch.ones_like(t))
    torch.testing.assert_close(d_sigma, torch.ones_like(t))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: DiscreteVP("cosine"), "cosine"),
        (lambda: DiscreteVP(beta_start=0.1, beta_end=0.01), "0.1"),
        (lambda: VE(sigma_min=5.0, sigma_max=1.0), "5.0"),
        (lambda: EDM(sigma_data=-1.0), "-1.0"),
        (lambda: RectifiedFlow(shift=0.0), "0.0"),
        (lambda: CosineVP(sampling_level_min=3.0, sampling_level_max=2.0), "3.0"),
    ],
)
def test_bad_process_configs_name_the_value(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
