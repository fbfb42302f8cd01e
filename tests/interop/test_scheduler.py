"""Scheduler configs become a diffuse process whose schedules visit diffusers' timesteps."""

from __future__ import annotations

import pytest
import torch
from tests.interop.conftest import diffusers

from diffuse.interop import UnsupportedModelError
from diffuse.interop.scheduler import scheduler_from_diffusers, scheduler_to_diffusers
from diffuse.model_folder import build_process
from diffuse.samplers.registry import get_schedule

CASES = [
    ("DDIMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                       "beta_end": 0.012, "steps_offset": 1}),
    ("DDIMScheduler", {"beta_schedule": "linear", "timestep_spacing": "trailing",
                       "prediction_type": "v_prediction"}),
    ("DDPMScheduler", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace"}),
    ("EulerDiscreteScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                "beta_end": 0.012, "timestep_spacing": "trailing",
                                "rescale_betas_zero_snr": True,
                                "prediction_type": "v_prediction"}),
]  # fmt: skip


@pytest.mark.parametrize(("class_name", "options"), CASES)
def test_process_and_schedule_match_the_scheduler(class_name, options):
    scheduler = getattr(diffusers, class_name)(**options)
    config = dict(scheduler.config)
    process_config, defaults = scheduler_from_diffusers(config, class_name, "test")
    process = build_process(process_config)
    # diffusers keeps bar-alpha in float32; diffuse in float64
    ours = process.alphas_cumprod
    assert torch.allclose(ours, scheduler.alphas_cumprod.double(), rtol=1e-4, atol=1e-12)
    want = {"epsilon": "eps", "v_prediction": "v"}[options.get("prediction_type", "epsilon")]
    assert process_config.parametrization == want
    steps = 10
    scheduler.set_timesteps(steps)
    levels = get_schedule(defaults.schedule)(process, steps)
    t = process.t_from_level(levels[:-1])
    assert torch.allclose(t, scheduler.timesteps.double(), atol=1e-3), (t, scheduler.timesteps)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("beta_schedule", "sigmoid", "beta_schedule='sigmoid'.*squaredcos_cap_v2"),
        ("prediction_type", "flow", "prediction_type='flow'.*v_prediction"),
        ("timestep_spacing", "karras", "timestep_spacing='karras'"),
        ("trained_betas", [0.1, 0.2], "trained_betas"),
    ],
)
def test_unsupported_scheduler_values_are_named(key, value, match):
    config = dict(diffusers.DDIMScheduler().config)
    config[key] = value
    with pytest.raises(UnsupportedModelError, match=match):
        scheduler_from_diffusers(config, "DDIMScheduler", "scheduler_config.json")


def test_set_alpha_to_one_false_stops_at_timestep_zero():
    """DDIM/PNDM with set_alpha_to_one=False end at timestep 0's level; the export says so."""
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", set_alpha_to_one=False)
    config = dict(scheduler.config)
    process_config, _ = scheduler_from_diffusers(config, "DDIMScheduler", "test")
    assert process_config.options.stop_at_first_timestep
    process = build_process(process_config)
    a0 = float(scheduler.alphas_cumprod[0])
    assert process.final_level == pytest.approx(((1 - a0) / a0) ** 0.5, rel=1e-4)  # fp32 a0
    assert scheduler_to_diffusers(process_config, "leading")["set_alpha_to_one"] is False
    euler, _ = scheduler_from_diffusers(config, "EulerDiscreteScheduler", "test")
    assert not euler.options.stop_at_first_timestep  # no final alpha in Euler's algorithm
    assert build_process(euler).final_level == 0.0
