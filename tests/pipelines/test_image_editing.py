"""Editing from an image on a tiny text-to-image pixel model (and the bundled latent model):
img2img from the strength's level with every sampler, same seed same pixels, inversion,
inpainting that keeps every unmasked pixel, and the errors for bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.pipelines import image_to_image
from diffuse.pipelines.image_to_image import (
    blend,
    start_levels,
    strength_level,
)
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.processes import PROCESSES
from diffuse.samplers import SAMPLERS, SCHEDULES
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, sample_split_scene
from text_recipe import train_args

TINY = [
    "train.steps=3",
    "checkpoint.every_steps=3",
    "sample.every_steps=0",
    "optim.warmup_steps=0",
    "optim.lr=0.03",
]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("edit") / "run"
    assert main(train_args(out, *TINY)) == 0
    return load_pipeline(out)


@pytest.fixture(scope="module")
def scene():
    """A held-out 32 px render and its caption."""
    s = sample_split_scene(7, 0, "heldout")
    return render_scene(s, 32), caption(s, 7, 0)


@pytest.fixture(scope="module")
def hole():
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 4:16] = 255
    return mask


@pytest.mark.parametrize("kind", sorted(PROCESSES))
def test_strength_picks_a_level_on_the_process_axis(kind):
    process = PROCESSES[kind]()
    lo, hi = process.level_min, process.level_max
    levels = [strength_level(process, s) for s in (0.05, 0.3, 0.6, 0.9, 1.0)]
    assert levels[-1] == hi and all(lo < v <= hi for v in levels)
    assert levels == sorted(levels)
    # uniform in log-level: strength 0.5 is the geometric mean of the range
    assert math.isclose(strength_level(process, 0.5), math.sqrt(lo * hi), rel_tol=1e-12)
    for name in SCHEDULES:
        got = start_levels(process, name, 7, 0.6)
        if name == "leading":  # by design one step below its top, as in generation
            assert levels[1] < float(got[0]) < levels[2]
        else:
            assert math.isclose(float(got[0]), levels[2], rel_tol=1e-9), name
        assert float(got[-1]) == 0.0 and len(got) == 8
        full = start_levels(process, name, 7, 1.0)
        assert torch.equal(full, SCHEDULES[name](process, 7))  # strength 1 = generation


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_starts_at_the_strength_level(sampler, pipe, scene, monkeypatch):
    image, prompt = scene
    seen: list[float] = []
    original = image_to_image.batch_denoise

    def recording(*args, **kwargs):
        denoise = original(*args, **kwargs)

        def wrapped(x, level):
            seen.append(float(level))
            return denoise(x, level)

        return wrapped

    monkeypatch.setattr(image_to_image, "batch_denoise", recording)
    out = pipe.edit(
        image, prompt, strength=0.4, seeds=[1], steps=3, sampler=sampler, output_type="pt"
    )
    start = strength_level(pipe.model.denoiser.process, 0.4)
    assert math.isclose(max(seen), start, rel_tol=1e-9)
    assert math.isclose(seen[0], start, rel_tol=1e-9) or sampler == "heun"
    assert torch.isfinite(out.images).all()


def test_same_seed_same_pixels_in_any_batch(pipe, scene):
    image, prompt = scene
    both = pipe.edit(image, prompt, strength=0.7, seeds=[3, 5], steps=3, output_type="pt")
    alone = pipe.edit(image, prompt, strength=0.7, seeds=[5], steps=3, output_type="pt")
    assert torch.equal(both.images[1], alone.images[0])
    assert not torch.equal(both.images[0], both.images[1])
    weaker = pipe.edit(image, prompt, strength=0.2, seeds=[5], steps=3, output_type="pt")
    original = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    # a lower strength stays closer to the input
    assert (weaker.images[0] - original).abs().mean() < (alone.images[0] - original).abs().mean()


@pytest.mark.parametrize("resample", [1, 2])
def test_inpainting_returns_every_unmasked_pixel(pipe, scene, hole, resample):
    image, prompt = scene
    out = pipe.inpaint(image, hole, prompt, seeds=[0, 1], steps=3, resample=resample)
    for picture in out.images:
        pixels = np.asarray(picture)
        assert np.array_equal(pixels[hole == 0], image[hole == 0])
        assert not np.array_equal(pixels[hole == 255], image[hole == 255])


def test_feathered_blend_is_exact_beyond_the_seam():
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    generated = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 6:10, 6:10] = 1
    soft = blend(generated, image, mask, feather=2)
    assert torch.equal(soft[..., :4, :], image[..., :4, :])  # 2+ pixels away: the input
    assert torch.equal(soft[..., 6:10, 6:10], generated[..., 6:10, 6:10])
    seam = soft[..., 5, 6:10]
    assert not torch.equal(seam, image[..., 5, 6:10]) and not torch.equal(
        seam, generated[..., 5, 6:10]
    )


def test_refined_inversion_reconstructs_the_image(pipe, scene):
    image, prompt = scene
    plain = pipe.edit_by_inversion(image, prompt, prompt, steps=8, guidance=1.0, output_type="pt")
    exact = pipe.edit_by_inversion(
        image, prompt, prompt, steps=8, guidance=1.0, refine=20, output_type="pt"
    )
    original = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255

    def psnr(x):
        return float(10 * torch.log10(1 / ((x - original) ** 2).mean()))

    assert psnr(exact.images) > 40, (psnr(plain.images), psnr(exact.images))
    assert psnr(exact.images) >= psnr(plain.images)


def test_inversion_is_unguided_unless_asked(pipe, scene):
    """The way up runs at source_guidance (default 1, the exact inverse), the way down at the
    request's guidance: with guidance 1 both ways the default equals an explicit 1."""
    image, prompt = scene
    run = {"steps": 6, "guidance": 3.0, "output_type": "pt", "seeds": [0]}
    default = pipe.edit_by_inversion(image, prompt, prompt, **run).images
    explicit = pipe.edit_by_inversion(image, prompt, prompt, source_guidance=1.0, **run).images
    guided_up = pipe.edit_by_inversion(image, prompt, prompt, source_guidance=3.0, **run).images
    assert torch.equal(default, explicit)
    assert not torch.equal(default, guided_up)
    params = pipe.edit_params("inversion", prompt, image, source_prompt=prompt)
    assert params.for_seed(0)["source_guidance"] == 1.0
    with pytest.raises(ValueError, match="source guidance must be a finite number >= 0, got nan"):
        pipe.edit_params("inversion", prompt, image, source_guidance=float("nan"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": 0.0}, r"strength must be in \(0, 1\], got 0.0"),
        ({"strength": 1.5}, r"strength must be in \(0, 1\], got 1.5"),
        ({"strength": float("nan")}, r"strength must be in \(0, 1\], got nan"),
        ({"strength": True}, r"strength must be a number in \(0, 1\], got True"),
        ({"sampler": "nope"}, "unknown sampler 'nope'"),
    ],
)
def test_bad_edit_arguments_are_named(pipe, scene, kwargs, message):
    image, prompt = scene
    with pytest.raises(ValueError, match=message):
        pipe.edit(image, prompt, **{"strength": 0.5, **kwargs})


def test_bad_images_and_masks_are_named(pipe, scene, hole, tmp_path):
    image, prompt = scene
    with pytest.raises(ValueError, match=r"image is 48x48 pixels; the model works at 32x32"):
        pipe.edit(np.zeros((48, 48, 3), np.uint8), prompt)
    grey = hole.copy()
    grey[0, 0] = 128
    with pytest.raises(ValueError, match=r"mask is not binary: it holds values \[128\]"):
        pipe.inpaint(image, grey, prompt)
    with pytest.raises(ValueError, match=r"mask has shape \(16, 16\); it must be a 32x32"):
        pipe.inpaint(image, np.zeros((16, 16), np.uint8), prompt)
    with pytest.raises(ValueError, match="is all black"):
        pipe.inpaint(image, np.zeros((32, 32), np.uint8), prompt)
    with pytest.raises(FileNotFoundError, match="no such image"):
        pipe.edit(tmp_path / "missing.png", prompt)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png is not a readable image"):
        pipe.edit(junk, prompt)
    with pytest.raises(ValueError, match="unknown inversion 'x'"):
        pipe.edit_by_inversion(image, prompt, prompt, inversion="x")
    with pytest.raises(ValueError, match="refine works with the ddim inversion only"):
        pipe.edit_by_inversion(image, prompt, prompt, inversion="dpmpp_2m", refine=2)
    with pytest.raises(ValueError, match="unknown task 'paint'"):
        pipe.edit_params("paint", prompt, image)


def test_latent_model_encodes_and_pastes_after_decoding():
    """The bundled latent model: the image goes through its VAE; inpainting blends in pixel
    space, so the unmasked pixels are the input's exactly."""
    pipe = load_pipeline()
    s = sample_split_scene(7, 1, "heldout")
    image = render_scene(s, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[:32, 32:] = 255
    out = pipe.inpaint(image, mask, caption(s, 7, 1), seeds=[0], steps=2, guidance=1.0)
    pixels = np.asarray(out.images[0])
    assert np.array_equal(pixels[mask == 0], image[mask == 0])
    edited = pipe.edit(
        image, caption(s, 7, 1), strength=0.3, seeds=[0], steps=2, guidance=1.0, output_type="pt"
    )
    assert edited.images.shape == (1, 3, 64, 64)
    assert Path(pipe.model.folder).name == "shapes-t2i"


def test_partial_inversion_walks_up_to_the_strength_level_and_back(pipe, scene):
    image, prompt = scene
    denoiser = pipe.model.denoiser
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
    latents = pipe.model.codec.encode(x)
    cond = pipe.conditioning([prompt])
    common = {"cond": cond, "guidance": 1.0, "steps": 8, "refine": 20}
    half = image_to_image.invert_latents(denoiser, latents, strength=0.5, **common)
    full = image_to_image.invert_latents(denoiser, latents, **common)
    levels = start_levels(denoiser.process, "karras", 8, 0.5)
    assert float(levels[0]) == pytest.approx(strength_level(denoiser.process, 0.5))
    assert (half - latents).std() < (full - latents).std()  # less noise than the full walk
    with torch.no_grad():
        back = SAMPLERS["ddim"](lambda z, level: denoiser(z, level, cond), half, levels)
    assert torch.allclose(back, latents, atol=1e-3)
