"""The pipeline accepts diffusers' call conventions and gives the same pixels as the native call.

The tiny text-to-image model is `t2i_run` (tests/conftest.py); every comparison is pixel for
pixel.
"""

import inspect

import numpy as np
import pytest
import torch

import diffuse
from diffuse.pipelines.call_conventions import (
    GenerationOutput,
    expand_prompts,
    seeds_from_generators,
)
from diffuse.pipelines.text_to_image import TextToImagePipeline, load_pipeline

PROMPT = "a red circle above a blue square"
OTHER = "a small green triangle at the bottom right"
STEPS = 3


@pytest.fixture(scope="module")
def run(t2i_run):
    return t2i_run


@pytest.fixture(scope="module")
def pipe(run) -> TextToImagePipeline:
    return load_pipeline(run)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


def test_generator_stands_for_its_seed(pipe):
    native = pipe(PROMPT, seeds=[7], steps=STEPS)
    g = torch.Generator().manual_seed(7)
    styled = pipe(PROMPT, generator=g, num_inference_steps=STEPS)
    assert styled.seeds == (7,)
    assert np.array_equal(pixels(native), pixels(styled.images))
    again = pipe(PROMPT, generator=g, num_inference_steps=STEPS)  # advanced, as in diffusers
    assert again.seeds != (7,)
    assert np.array_equal(pixels(again), pixels(pipe(PROMPT, seeds=again.seeds, steps=STEPS)))


def test_a_list_of_generators_gives_one_seed_each(pipe):
    gens = [torch.Generator().manual_seed(s) for s in (3, 5)]
    styled = pipe(PROMPT, generator=gens, num_images_per_prompt=2, num_inference_steps=STEPS)
    native = pipe(PROMPT, seeds=[3, 5], steps=STEPS)
    assert styled.seeds == (3, 5)
    assert np.array_equal(pixels(styled.images), pixels(native))


def test_one_generator_for_several_images_counts_up():
    g = torch.Generator().manual_seed(10)
    assert seeds_from_generators(g, 3) == [10, 11, 12]
    used = seeds_from_generators(g, 2)  # now used: drawn from its stream
    assert len(used) == 2 and used != [10, 11]
    with pytest.raises(ValueError, match="2 generators given for 3 images"):
        seeds_from_generators([torch.Generator(), torch.Generator()], 3)


def test_prompt_lists_negative_prompts_and_images_per_prompt(pipe):
    out = pipe(
        [PROMPT, OTHER],
        negative_prompt=["", PROMPT],
        num_images_per_prompt=2,
        guidance_scale=4.0,
        num_inference_steps=STEPS,
    )
    assert out.prompts == (PROMPT, PROMPT, OTHER, OTHER)  # prompt-major, as in diffusers
    assert out.seeds == (0, 1, 2, 3)
    first = pipe(PROMPT, seeds=[0, 1], steps=STEPS, guidance=4.0)
    second = pipe(OTHER, PROMPT, seeds=[2, 3], steps=STEPS, guidance=4.0)
    assert np.array_equal(pixels(out.images), np.concatenate([pixels(first), pixels(second)]))


def test_output_types(pipe):
    pil = pixels(pipe(PROMPT, seeds=[1], steps=STEPS).images)
    as_np = pipe(PROMPT, seeds=[1], steps=STEPS, output_type="np").images
    as_pt = pipe(PROMPT, seeds=[1], steps=STEPS, output_type="pt").images
    assert as_np.dtype == np.float32 and as_np.shape == pil.shape
    assert as_np.min() >= 0.0 and as_np.max() <= 1.0
    assert np.array_equal(np.round(as_np * 255).astype(np.uint8), pil)
    assert isinstance(as_pt, torch.Tensor) and as_pt.shape == (1, 3, pipe.size, pipe.size)
    assert torch.equal(as_pt.permute(0, 2, 3, 1), torch.from_numpy(as_np))
    latent = pipe(PROMPT, seeds=[1], steps=STEPS, output_type="latent").images
    assert latent.shape == (1, *pipe.model.shape)
    (images,) = pipe(PROMPT, seeds=[1], steps=STEPS, return_dict=False)
    assert np.array_equal(pixels(images), pil)
    with pytest.raises(ValueError, match="'jpeg'"):
        pipe(PROMPT, output_type="jpeg")


def test_result_is_also_a_list_of_images(pipe):
    out = pipe(PROMPT, seeds=[0, 1], steps=STEPS)
    assert isinstance(out, GenerationOutput) and len(out) == 2
    assert np.array_equal(np.asarray(out[1]), np.asarray(out.images[1]))
    assert [np.asarray(i).shape for i in out] == [np.asarray(i).shape for i in out.images]


def test_height_and_width_are_checked_against_the_model(pipe):
    size = pipe.size
    assert len(pipe(PROMPT, height=size, width=size, seeds=[0], steps=STEPS)) == 1
    with pytest.raises(ValueError, match=f"size {size * 2} is not available"):
        pipe(PROMPT, height=size * 2, width=size * 2, steps=STEPS)
    with pytest.raises(ValueError, match="disagree"):
        pipe(PROMPT, height=size, width=size * 2, steps=STEPS)
    with pytest.raises(ValueError, match="disagree"):
        pipe(PROMPT, steps=3, num_inference_steps=4)


def test_callback_on_step_end_sees_and_replaces_latents(pipe):
    seen = []

    def hook(p, step, level, tensors):
        seen.append((step, level, tuple(tensors["latents"].shape)))
        if step == STEPS - 1:
            return {"latents": torch.zeros_like(tensors["latents"])}
        return {}

    out = pipe(PROMPT, seeds=[0], num_inference_steps=STEPS, output_type="latent",
               callback_on_step_end=hook)  # fmt: skip
    assert [s for s, _, _ in seen] == list(range(STEPS)) and seen[-1][1] == 0.0
    assert torch.equal(out.images, torch.zeros_like(out.images))


def test_bad_arguments_name_the_value(pipe):
    with pytest.raises(ValueError, match="num_images_per_prompt .* got 0"):
        pipe(PROMPT, num_images_per_prompt=0)
    with pytest.raises(ValueError, match="seeds or generator"):
        pipe(PROMPT, seeds=[1], generator=torch.Generator())
    with pytest.raises(ValueError, match="one string per prompt"):
        expand_prompts([PROMPT, OTHER], ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="non-empty list"):
        expand_prompts([], None, 1)


def test_from_pretrained_and_to(pipe, run):
    assert pipe.to("cpu") is pipe
    again = TextToImagePipeline.from_pretrained(run)
    a = pixels(again(PROMPT, seeds=[2], num_inference_steps=STEPS).images)
    assert np.array_equal(a, pixels(pipe(PROMPT, seeds=[2], steps=STEPS)))


def test_signatures_are_real():
    assert "model" in inspect.signature(diffuse.load_pipeline).parameters
    params = inspect.signature(TextToImagePipeline.__call__).parameters
    for name in ("num_inference_steps", "guidance_scale", "generator", "output_type", "seeds"):
        assert name in params
    assert diffuse.TextToImagePipeline is TextToImagePipeline
