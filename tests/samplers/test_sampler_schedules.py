"""Schedules: shape, ends, monotonicity, the published formulas, and argument validation."""

from __future__ import annotations

import math
import re

import pytest
import torch

from diffuse.processes import EDM, VE, CosineVP, DiscreteVP, RectifiedFlow
from diffuse.samplers import SCHEDULES, flow_shift, get_schedule, karras, loglinear, uniform_t

PROCESSES = [
    DiscreteVP(),
    DiscreteVP("scaled_linear"),
    CosineVP(),
    VE(),
    EDM(),
    RectifiedFlow(),
    RectifiedFlow(shift=3.0),
]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("process", PROCESSES, ids=repr)
@pytest.mark.parametrize("steps", [1, 2, 7, 30])
def test_schedule_contract(name, process, steps):
    levels = get_schedule(name)(process, steps)
    assert levels.dtype == torch.float64 and levels.shape == (steps + 1,)
    assert levels[-1] == 0 and bool(torch.all(levels[:-1] > levels[1:]))
    assert float(levels[0]) <= process.level_max * (1 + 1e-9)
    assert float(levels[-2]) >= process.level_min * (1 - 1e-9)
    if name not in ("leading",):
        assert math.isclose(float(levels[0]), process.level_max, rel_tol=1e-9)


@pytest.mark.parametrize("name", ["karras", "loglinear", "exponential", "flow_shift", "uniform_t"])
def test_full_range_schedules_end_at_level_min(name):
    levels = get_schedule(name)(EDM(), 10)
    assert math.isclose(float(levels[-2]), EDM().level_min, rel_tol=1e-9)


def test_karras_formula():
    lo, hi, rho, n = 0.002, 80.0, 7.0, 18
    levels = karras(None, n, level_min=lo, level_max=hi, rho=rho)
    i = torch.arange(n, dtype=torch.float64)
    expected = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    assert torch.allclose(levels[:-1], expected, rtol=1e-12)


def test_loglinear_is_uniform_in_log_snr():
    levels = loglinear(None, 9, level_min=0.01, level_max=100.0)
    gaps = levels[:-1].log().diff()
    assert torch.allclose(gaps, torch.full_like(gaps, math.log(1e-4) / 8), rtol=1e-12)


def test_ddpm_spacings_match_lin_et_al():
    process = DiscreteVP()
    table = process.log_levels.exp()
    trailing = uniform_t(process, 10, spacing="trailing")
    assert torch.allclose(trailing[:-1], table[[999, 899, 799, 699, 599, 499, 399, 299, 199, 99]])
    leading = uniform_t(process, 10, spacing="leading")
    assert torch.allclose(leading[:-1], table[[900, 800, 700, 600, 500, 400, 300, 200, 100, 0]])
    linspace = uniform_t(process, 4, spacing="linspace")
    assert torch.allclose(linspace[:-1], table[[999, 666, 333, 0]])
    # The 1000-step DDPM schedule visits every table level.
    assert torch.allclose(uniform_t(process, 1000)[:-1], table.flip(0))


def test_uniform_t_is_uniform_in_process_time():
    process = CosineVP()
    levels = uniform_t(process, 6)
    t = process.t_from_level(levels[:-1])
    assert torch.allclose(t.diff(), torch.full((5,), float(t[1] - t[0]), dtype=torch.float64))


def test_flow_shift_is_a_shifted_uniform_grid():
    flow = RectifiedFlow(shift=3.0)
    levels = flow_shift(flow, 8)
    t_unshifted = (levels[:-1] / 3.0) / (1 + levels[:-1] / 3.0)
    gaps = t_unshifted.diff()
    assert torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-9)
    plain = flow_shift(flow, 8, shift=1.0)
    t = plain[:-1] / (1 + plain[:-1])
    assert torch.allclose(t.diff(), t.diff()[0].expand(7), rtol=1e-9)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(name, steps):
    with pytest.raises(ValueError, match=re.escape(repr(steps))):
        get_schedule(name)(EDM(), steps)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize(("lo", "hi"), [(1.0, 1.0), (5.0, 2.0)])
def test_level_min_must_be_below_level_max(name, lo, hi):
    with pytest.raises(ValueError, match=re.escape(f"level_min={lo!r} >= level_max={hi!r}")):
        get_schedule(name)(EDM(), 5, level_min=lo, level_max=hi)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_levels_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="level_min"):
        karras(None, 5, level_min=bad, level_max=10.0)


def test_bad_options():
    with pytest.raises(ValueError, match="-1.0"):
        karras(EDM(), 5, rho=-1.0)
    with pytest.raises(ValueError, match="'middle'"):
        uniform_t(EDM(), 5, spacing="middle")
    with pytest.raises(ValueError, match="0.0"):
        flow_shift(EDM(), 5, shift=0.0)
    with pytest.raises(ValueError, match="1001"):
        uniform_t(DiscreteVP(), 1001)
