"""Video pipeline on a tiny trained video model: shapes, seeds, batch invariance, guidance and
samplers, image-to-video keeping the first frame, and bad requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.pipelines.video import VideoPipeline, clip_frames_uint8, load_video_pipeline
from video_recipe import video_train_args

PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> VideoPipeline:
    out = tmp_path_factory.mktemp("video") / "run"
    assert main(video_train_args(out)) == 0
    pipe = load_video_pipeline(out / "model")
    torch.manual_seed(0)
    with torch.no_grad():  # turn the zero-initialised temporal and first-frame parts on
        for name, p in pipe.base.model.denoiser.net.named_parameters():
            if "temporal" in name or name.startswith(("frame_embed", "conv_in")):
                p.add_(torch.randn_like(p) * 0.05)
    return pipe


def test_clips_seeds_and_batch_invariance(pipe: VideoPipeline) -> None:
    params = pipe.params(PROMPT, frames=4, seeds=[0, 1, 2], steps=2)
    clips = pipe.generate(params)
    assert clips.shape == (3, 3, 4, 16, 16) and clips.abs().max() <= 1
    alone = pipe.generate(pipe.params(PROMPT, frames=4, seeds=[1], steps=2))
    torch.testing.assert_close(alone[0], clips[1], rtol=0, atol=0)  # same seed, same clip
    assert not torch.equal(clips[0], clips[1])
    assert clip_frames_uint8(clips[0]).shape == (4, 16, 16, 3)
    shorter = pipe.generate(pipe.params(PROMPT, frames=2, seeds=[0], steps=2))
    assert shorter.shape == (1, 3, 2, 16, 16)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "euler_ancestral"])
def test_samplers_guidance_and_negative_prompt(pipe: VideoPipeline, sampler: str) -> None:
    params = pipe.params(PROMPT, frames=3, seeds=[4], steps=2, sampler=sampler, guidance=3.0)
    a = pipe.generate(params)
    torch.testing.assert_close(pipe.generate(params), a, rtol=0, atol=0)
    negative = pipe.params(PROMPT, "a blue square", frames=3, seeds=[4], steps=2, sampler=sampler)
    assert not torch.equal(pipe.generate(negative), a)


def test_static_prompt_is_allowed(pipe: VideoPipeline) -> None:
    clips = pipe.generate(pipe.params("a red circle", frames=4, seeds=[0], steps=2))
    assert clips.shape == (1, 3, 4, 16, 16)


def test_image_to_video_keeps_the_first_frame(pipe: VideoPipeline, tmp_path: Path) -> None:
    from PIL import Image

    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[4:10, 3:9] = (220, 30, 30)
    Image.fromarray(pixels).save(tmp_path / "start.png")
    image = pipe.read_start_image(tmp_path / "start.png")
    params = pipe.params("the red square moves down", frames=4, seeds=[0, 1], steps=3, image=image)
    assert params.image_hash and params.for_seed(0)["image_hash"] == params.image_hash
    clips = pipe.generate(params, image=image)
    # A pixel-space model: frame 0 is the start image itself.
    torch.testing.assert_close(clips[:, :, 0], image.expand(2, -1, -1, -1), rtol=0, atol=1e-5)
    assert not torch.equal(clips[:, :, 1], clips[:, :, 0])
    with pytest.raises(ValueError, match="not the one"):
        pipe.generate(params)


def test_bad_requests(pipe: VideoPipeline, tmp_path: Path) -> None:
    from PIL import Image

    with pytest.raises(ValueError, match=r"frames must be in 1\.\.4.*got 0"):
        pipe.params(PROMPT, frames=0)
    with pytest.raises(ValueError, match=r"frames must be in 1\.\.4.*got 5"):
        pipe.params(PROMPT, frames=5)
    with pytest.raises(ValueError, match="unknown sampler"):
        pipe.params(PROMPT, sampler="nope")
    with pytest.raises(ValueError, match="steps"):
        pipe.params(PROMPT, steps=0)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="32"):
        pipe.read_start_image(tmp_path / "big.png")
    with pytest.raises(ValueError, match="image model"):
        VideoPipeline(load_pipeline())
