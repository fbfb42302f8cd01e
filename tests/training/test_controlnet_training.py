"""Training a ControlNet on Shapes scenes: the base stays frozen and the zero layers move."""

from __future__ import annotations

import torch

from diffuse.cli import main
from diffuse.model_folder import load_model
from diffuse.training.controlnet import ControlNetRecipe, train_controlnet
from text_recipe import train_args


def test_a_few_steps_train_only_the_controlnet(tmp_path, one_thread):
    out = tmp_path / "run"
    assert main(train_args(out, "train.steps=1", "checkpoint.every_steps=1")) == 0
    base = load_model(out)
    before = {k: v.clone() for k, v in base.denoiser.net.state_dict().items()}
    recipe = ControlNetRecipe(kind="edges", steps=4, batch_size=4, lr=1e-2, scenes=8, seed=3)
    controlnet, losses = train_controlnet(base, recipe)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    after = base.denoiser.net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert controlnet.mid_out.weight.abs().sum() > 0  # the zero projection has moved
    assert controlnet.config.kind == "edges" and controlnet.config.factor == 1
