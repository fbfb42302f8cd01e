"""diffusers scheduler configs as a diffuse process, parametrisation and sampling defaults.

A diffusers scheduler mixes three things diffuse keeps apart: the training noise process (the
beta schedule, zero terminal SNR), what the network predicts (`prediction_type`) and how
sampling walks the timesteps (`timestep_spacing`, `steps_offset`, the algorithm of the class).
Here the first becomes a `DiscreteVP`, the second a `Parametrization`, the third the model's
default schedule and sampler, and every diffuse sampler then runs on the one level axis.

diffuse's samplers end at level 0 with the clean estimate, which is what a scheduler with
`set_alpha_to_one=True` (or no final noisy step) does; with `set_alpha_to_one=False` (DDIM and
PNDM; Stable Diffusion 1.x's configs) diffusers' last step stops at the noise level of timestep
0 (about 0.03 for Stable Diffusion) and returns that sample: the process then records
`stop_at_first_timestep` and generation does the same (`pipelines.sample.stop_at_final_level`).
Sample clipping and dynamic thresholding (`clip_sample`, `thresholding`) are not reproduced; a
config that asks for them is imported with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from diffuse.config import ConfigError, DiscreteVPOptions, ProcessConfig
from diffuse.denoiser import Parametrization
from diffuse.interop.folder import UnsupportedModelError
from diffuse.processes.vp import BETA_SCHEDULES

__all__ = ["SchedulerDefaults", "scheduler_from_diffusers", "scheduler_to_diffusers"]

logger = logging.getLogger(__name__)

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
SPACING_SCHEDULES = {"leading": "leading", "trailing": "trailing", "linspace": "uniform_t"}
# Each scheduler class's algorithm, as the closest diffuse sampler.
CLASS_SAMPLERS = {
    "DDIMScheduler": "ddim",
    "DDPMScheduler": "ddpm_ancestral",
    "PNDMScheduler": "dpmpp_2m",
    "LMSDiscreteScheduler": "dpmpp_2m",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "UniPCMultistepScheduler": "unipc",
    "HeunDiscreteScheduler": "heun",
}

# The classes whose last step ends at timestep 0's noise level when set_alpha_to_one is False.
FINAL_ALPHA_CLASSES = frozenset({"DDIMScheduler", "PNDMScheduler"})


@dataclass(frozen=True)
class SchedulerDefaults:
    """What a scheduler config says about sampling: the default sampler and schedule."""

    sampler: str
    schedule: str


def scheduler_from_diffusers(
    config: dict[str, Any], class_name: str, where: str
) -> tuple[ProcessConfig, SchedulerDefaults]:
    """The diffuse process (with its parametrisation) and sampling defaults of a scheduler.

    Args:
        config: the scheduler's config.json (scheduler_config.json in older folders).
        class_name: the scheduler class (one of CLASS_SAMPLERS).
        where: the file, for messages.
    Returns:
        (process config, default sampler and schedule).
    Raises:
        UnsupportedModelError: explicit `trained_betas`, an unknown beta schedule, prediction
            type or timestep spacing (naming the value and the supported ones).
    """
    if config.get("trained_betas") is not None:
        raise UnsupportedModelError(f"{where}: trained_betas is not supported (a named schedule)")
    schedule = config.get("beta_schedule", "linear")
    if schedule not in BETA_SCHEDULES:
        raise UnsupportedModelError(
            f"{where}: beta_schedule={schedule!r} is not supported; supported: "
            f"{', '.join(BETA_SCHEDULES)}"
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise UnsupportedModelError(
            f"{where}: prediction_type={prediction!r} is not supported; supported: "
            f"{', '.join(PREDICTION_TYPES)}"
        )
    spacing = config.get("timestep_spacing", "leading")
    if spacing not in SPACING_SCHEDULES:
        raise UnsupportedModelError(
            f"{where}: timestep_spacing={spacing!r} is not supported; supported: "
            f"{', '.join(SPACING_SCHEDULES)}"
        )
    for key in ("clip_sample", "thresholding"):
        if config.get(key):
            logger.warning("%s: %s is not reproduced by diffuse's samplers", where, key)
    try:
        options = DiscreteVPOptions(
            beta_schedule=schedule,
            num_timesteps=int(config.get("num_train_timesteps", 1000)),
            beta_start=float(config.get("beta_start", 0.0001)),
            beta_end=float(config.get("beta_end", 0.02)),
            zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
            steps_offset=int(config.get("steps_offset", 0)) if spacing == "leading" else 0,
            stop_at_first_timestep=class_name in FINAL_ALPHA_CLASSES
            and not config.get("set_alpha_to_one", True),
        )
    except ConfigError as err:
        raise UnsupportedModelError(f"{where}: {err}") from None
    process = ProcessConfig(
        kind="discrete_vp", parametrization=PREDICTION_TYPES[prediction], options=options
    )
    karras = bool(config.get("use_karras_sigmas", False))
    defaults = SchedulerDefaults(
        sampler=CLASS_SAMPLERS[class_name],
        schedule="karras" if karras else SPACING_SCHEDULES[spacing],
    )
    return process, defaults


def scheduler_to_diffusers(process: ProcessConfig, schedule: str) -> dict[str, Any]:
    """A DDIMScheduler config for a diffuse model's process.

    Args:
        process: the model's process config (must be discrete_vp: diffusers' schedulers are
            discrete-time).
        schedule: the model's default schedule name (chooses timestep_spacing).
    Raises:
        UnsupportedModelError: another process or parametrisation (with the reason).
    """
    if process.kind != "discrete_vp":
        raise UnsupportedModelError(
            f"process {process.kind!r} has no diffusers scheduler: diffusers' DDPM-family "
            "schedulers are discrete-time VP (export needs process.kind = 'discrete_vp')"
        )
    names = {v: k for k, v in PREDICTION_TYPES.items()}
    param = Parametrization.parse(process.parametrization).value
    if param not in names:
        raise UnsupportedModelError(
            f"parametrization {param!r} has no diffusers prediction_type; supported: "
            f"{', '.join(names)}"
        )
    o = process.options
    spacing = {v: k for k, v in SPACING_SCHEDULES.items()}.get(schedule, "leading")
    start, end = o.beta_start, o.beta_end
    defaults = (1e-4, 0.02) if o.beta_schedule == "linear" else (0.00085, 0.012)
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": o.num_timesteps,
        "beta_schedule": o.beta_schedule,
        "beta_start": defaults[0] if start is None else start,
        "beta_end": defaults[1] if end is None else end,
        "prediction_type": names[param],
        "timestep_spacing": spacing,
        "steps_offset": o.steps_offset,
        "rescale_betas_zero_snr": o.zero_terminal_snr,
        "set_alpha_to_one": not o.stop_at_first_timestep,
        "clip_sample": False,
    }
