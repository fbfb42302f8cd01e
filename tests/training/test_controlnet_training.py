"""Training a ControlNet with `diffuse train` ([control] kind): the base of train.init stays
frozen, only the ControlNet's weights move, and the run writes a ControlNet folder for that
base."""

from __future__ import annotations

import pytest
import torch

from diffuse.cli import main
from diffuse.config import ConfigError, load_recipe
from diffuse.controlnet_folder import is_controlnet_folder, load_controlnet
from diffuse.model_folder import load_model
from diffuse.training.checkpoint import load_latest
from diffuse.training.loop import train
from text_recipe import RECIPE, TINY, train_args


@pytest.fixture(scope="module")
def base(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("cn-base") / "run"
    assert main(train_args(out, "train.steps=1", "checkpoint.every_steps=1")) == 0
    return out / "model"


def test_a_controlnet_run_moves_only_the_controlnet(base, tmp_path):
    out = tmp_path / "cn"
    control = ["control.kind=edges", f"train.init={base}", "train.steps=2", "sample.every_steps=0"]
    assert main(train_args(out, *control, "optim.lr=1e-2", "checkpoint.every_steps=1")) == 0
    assert is_controlnet_folder(out / "model")
    controlnet = load_controlnet(out / "model", base)
    assert controlnet.config.kind == "edges" and controlnet.config.factor == 1
    assert controlnet.mid_out.weight.abs().sum() > 0  # the zero projection has moved
    # The checkpoint's base half equals the init weights: the base was frozen.
    start = load_model(base).denoiser.net.state_dict()
    state = load_latest(out).model
    kept = {k[len("base.") :]: v for k, v in state.items() if k.startswith("base.")}
    assert kept.keys() == start.keys()
    assert all(torch.equal(kept[k], start[k].float()) for k in start)


def test_a_controlnet_recipe_needs_a_base(tmp_path):
    overrides = [*TINY, "control.kind=layout", "train.steps=1"]
    with pytest.raises(ConfigError, match="control.kind = 'layout' needs train.init"):
        train(load_recipe(RECIPE, overrides), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
