"""The whole text-to-image path: diffusers' StableDiffusionPipeline with DDIM and diffuse's
ddim sampler on the imported model give the same image from the same initial latents."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tests.interop.conftest import LATENT, PROMPT, build_sd_folder, diffusers

from diffuse.guidance import classifier_free_guidance
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.samplers.noise import SeededNoise
from diffuse.samplers.registry import get_sampler, get_schedule

STEPS, GUIDANCE = 20, 7.5


def _diffusers_image(folder, latents: torch.Tensor) -> torch.Tensor:
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        latents=latents.clone(),
        height=2 * LATENT,
        width=2 * LATENT,
        output_type="pt",
    )
    return out.images  # [B, 3, H, W] in [0, 1]


def _diffuse_image(folder, latents: torch.Tensor) -> torch.Tensor:
    pipe = load_pipeline(folder)
    model = pipe.model
    assert model.info.sampling.sampler == "ddim" and model.info.sampling.schedule == "leading"
    denoise = classifier_free_guidance(
        model.denoiser, pipe.conditioning([PROMPT]), pipe.conditioning([""]), GUIDANCE
    )
    levels = get_schedule(model.info.sampling.schedule)(model.denoiser.process, STEPS)
    # diffusers' latents are x_t = alpha x at the first timestep; the level axis is x.
    x = latents.double() * math.sqrt(1 + float(levels[0]) ** 2)
    x0 = get_sampler("ddim")(denoise, x.float(), levels)
    return (model.codec.decode(x0) / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("fixture", ["sd_folder", "sd_v_folder"])
def test_same_image_as_stable_diffusion_pipeline(fixture, request):
    folder = request.getfixturevalue(fixture)
    latents = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = _diffusers_image(folder, latents)
        ours = _diffuse_image(folder, latents)
    assert ours.shape == theirs.shape == (1, 3, 2 * LATENT, 2 * LATENT)
    assert theirs.std() > 0.01  # a real image, not a constant
    assert (ours - theirs).abs().max().item() < 1e-4


def test_leading_schedule_is_diffusers_timesteps(sd_folder):
    """The imported process and schedule visit exactly DDIM's timesteps 951, 901, ..., 1."""
    pipe = load_pipeline(sd_folder)
    process = pipe.model.denoiser.process
    levels = get_schedule("leading")(process, STEPS)
    scheduler = diffusers.DDIMScheduler.from_pretrained(sd_folder / "scheduler")
    scheduler.set_timesteps(STEPS)
    t = process.t_from_level(levels[:-1])
    assert torch.allclose(t, scheduler.timesteps.double(), atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_pipeline_call_matches_stable_diffusion_with_final_alpha(prediction_type, tmp_path):
    """diffuse's own pipeline call (seeded noise, the VP prior std sqrt(1 + level^2), ddim)
    gives diffusers' image for an SD scheduler with set_alpha_to_one=False, whose last step
    stops at timestep 0's level; diffusers gets the same standard-normal latents."""
    folder = build_sd_folder(
        tmp_path / "sd", prediction_type, linear_projection=True, set_alpha_to_one=False
    )
    seed = 11
    pipe = load_pipeline(folder)
    process = pipe.model.denoiser.process
    assert process.stop_at_first_timestep and process.final_level == process.level_min
    latents = SeededNoise([seed]).initial(pipe.model.shape)
    with torch.no_grad():
        theirs = _diffusers_image(folder, latents)
        ours = pipe(
            PROMPT, seeds=[seed], steps=STEPS, guidance=GUIDANCE, sampler="ddim",
            schedule="leading", output_type="pt",
        ).images  # fmt: skip
    assert theirs.std() > 0.01
    assert (ours - theirs).abs().max().item() < 1e-4
    # without the final alpha the image differs measurably (the step goes on to level 0)
    plain = dataclasses.replace(process, stop_at_first_timestep=False)
    pipe.model.denoiser.process = plain
    with torch.no_grad():
        other = pipe(
            PROMPT, seeds=[seed], steps=STEPS, guidance=GUIDANCE, sampler="ddim",
            schedule="leading", output_type="pt",
        ).images  # fmt: skip
    assert (other - theirs).abs().max().item() > 3e-4  # several times the tolerance
