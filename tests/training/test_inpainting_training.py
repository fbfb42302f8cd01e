"""A trained inpainting model (model.inpainting): fine-tuned from a text-to-image model with
zero-initialised mask and masked-image channels (so it starts as the base), random masks,
and `diffuse inpaint` sampling with it, keeping the pixels outside the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse.cli import main
from diffuse.config import load_recipe
from diffuse.denoiser import EXTRA_INPUTS
from diffuse.model_folder import load_model
from diffuse.pngmeta import read_params
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, sample_split_scene
from diffuse.training.build import read_inputs
from diffuse.training.inpaint_masks import draw_mask
from diffuse.training.model import build_network
from text_recipe import RECIPE, TINY, train_args

INPAINT = ["model.inpainting=true", "sample.every_steps=0"]


@pytest.fixture(scope="module")
def inpaint_model(t2i_run, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("inpaint") / "run"
    sets = [*INPAINT, f"train.init={t2i_run / 'model'}", "train.steps=2", "optim.lr=1e-2"]
    assert main(train_args(out, *sets, "checkpoint.every_steps=2")) == 0
    return out / "model"


def test_the_new_channels_start_at_zero_so_the_start_is_the_base(t2i_run, one_thread):
    cfg = load_recipe(RECIPE, [*TINY, *INPAINT, f"train.init={t2i_run / 'model'}"])
    inputs = read_inputs(cfg, build_network)
    base = load_model(t2i_run / "model").denoiser.net
    net = inputs.net.eval()
    channels = base.config.in_channels
    assert net.config.extra_in_channels == channels + 1
    x = torch.randn(2, channels, 32, 32)
    extra = torch.randn(2, channels + 1, 32, 32)
    c_noise = torch.tensor([0.3, -1.0])
    context = {"context": torch.randn(2, 5, base.config.context_dim)}
    context["pooled"] = torch.randn(2, base.config.pooled_dim)
    with torch.no_grad():
        want = base(x, c_noise, **context)
        got = net(torch.cat([x, extra], 1), c_noise, **context)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_masks_are_seeded_and_of_every_kind():
    def mask(seed: int) -> np.ndarray:
        return draw_mask(np.random.default_rng(seed), 32, [(0, 2)])

    assert np.array_equal(mask(3), mask(3))
    masks = [mask(s) for s in range(200)]
    assert all(set(np.unique(m)) <= {0.0, 1.0} and m.any() for m in masks)
    whole = sum(bool(m.all()) for m in masks)
    cell = sum(bool(m[:11, 21:].all() and not m[11:].any() and not m[:, :21].any()) for m in masks)
    assert 5 <= whole <= 40 and 50 <= cell <= 115  # 10% and 40% of 200


def test_inpaint_uses_the_trained_model_and_keeps_the_outside(inpaint_model, tmp_path):
    model = load_model(inpaint_model)
    assert model.info.inpainting
    scene = sample_split_scene(7, 3, "heldout")
    Image.fromarray(render_scene(scene, 32)).save(tmp_path / "scene.png")
    hole = np.zeros((32, 32), np.uint8)
    hole[:16, :16] = 255
    Image.fromarray(hole).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    args = ["inpaint", str(tmp_path / "scene.png"), caption(scene, 7, 3), "--mask"]
    args += [str(tmp_path / "mask.png"), "--model", str(inpaint_model), "-o", str(out)]
    assert main([*args, "--steps", "2", "--no-progress"]) == 0
    picture = np.asarray(Image.open(out).convert("RGB"))
    source = np.asarray(Image.open(tmp_path / "scene.png").convert("RGB"))
    assert np.array_equal(picture[16:], source[16:]) and np.array_equal(
        picture[:, 16:], source[:, 16:]
    )
    again = tmp_path / "again.png"
    redo = ["inpaint", "--from-png", str(out), "--model", str(inpaint_model), "-o", str(again)]
    assert main([*redo, "--no-progress"]) == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
    assert read_params(again)["task"] == "inpaint"
    bad = ["--steps", "2", "--no-progress", "--resample", "2", "-o", str(tmp_path / "no.png")]
    assert main([*args[:-2], *bad]) == 2
    assert not (tmp_path / "no.png").exists()


def test_generate_with_an_inpainting_model_masks_everything(inpaint_model, tmp_path):
    from diffuse.pipelines.text_to_image import load_pipeline

    pipe = load_pipeline(inpaint_model)
    params = pipe.params("a red circle", seeds=[0], steps=2)
    images = pipe.generate(params)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
    c, h, w = pipe.model.shape
    whole = torch.cat([torch.ones(1, 1, h, w), torch.zeros(1, c, h, w)], 1)
    assert torch.equal(pipe.generate(params, extra_cond={EXTRA_INPUTS: whole}), images)
