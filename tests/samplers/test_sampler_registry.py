"""The name registry behind the CLI's --sampler and --schedule."""

from __future__ import annotations

import pytest

from diffuse.samplers import SAMPLERS, SCHEDULES, STOCHASTIC, get_sampler, get_schedule


def test_required_names_are_registered():
    required = {
        "ddpm_ancestral",
        "ddim",
        "euler",
        "euler_ancestral",
        "heun",
        "dpmpp_2m",
        "dpmpp_3m",
        "dpmpp_2m_sde",
        "dpmpp_3m_sde",
        "unipc",
        "unipc_3",
    }
    assert required <= set(SAMPLERS)
    assert {"karras", "loglinear", "exponential", "uniform_t", "trailing", "flow_shift"} <= set(
        SCHEDULES
    )
    assert set(SAMPLERS) >= STOCHASTIC


def test_lookup_returns_the_function():
    assert get_sampler("euler") is SAMPLERS["euler"]
    assert get_schedule("karras") is SCHEDULES["karras"]


@pytest.mark.parametrize(("lookup", "table"), [(get_sampler, SAMPLERS), (get_schedule, SCHEDULES)])
@pytest.mark.parametrize("name", ["eulr", "", "KARRAS", None])
def test_unknown_name_lists_the_valid_ones(lookup, table, name):
    with pytest.raises(ValueError) as err:
        lookup(name)
    message = str(err.value)
    assert repr(name) in message
    assert all(valid in message for valid in table)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        SAMPLERS["mine"] = None  # type: ignore[index]
