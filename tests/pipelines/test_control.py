"""A ControlNet next to a frozen text-to-image model: saved and loaded with its base's hash,
refused for another base, and with scale 0 (or fresh) the images of the base bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch

from diffuse.cli import main
from diffuse.codecs.controls import edge_map
from diffuse.nets.controlnet import ControlNet, ControlNetConfig
from diffuse.pipelines.control import controlled, load_controlnet, save_controlnet
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, sample_split_scene
from text_recipe import train_args

TINY = ["train.steps=2", "checkpoint.every_steps=2", "sample.every_steps=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("control") / "run"
    assert main(train_args(out, *TINY)) == 0
    return out


def test_controlnet_round_trip_scale_zero_and_other_base(run, tmp_path):
    pipe = load_pipeline(run)
    config = ControlNetConfig("edges", pipe.model.codec.downsample, pipe.model.denoiser.net.config)
    control = ControlNet.from_base(pipe.model.denoiser.net, config)
    with torch.no_grad():  # as if trained
        for p in control.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = save_controlnet(tmp_path / "cn", control, pipe.model)
    loaded = load_controlnet(folder, pipe.model)
    assert all(
        torch.equal(a, b)
        for a, b in zip(control.state_dict().values(), loaded.state_dict().values())
    )
    scene = sample_split_scene(7, 0, "heldout")
    hint = edge_map(render_scene(scene, pipe.size))
    params = pipe.params(caption(scene, 7, 0), seeds=[0, 1], steps=3)
    plain = pipe.generate(params)
    with controlled(pipe.model, loaded, scale=0.0) as extra:
        off = pipe.generate(params, extra_cond=extra(hint))
    with controlled(pipe.model, loaded, scale=1.0) as extra:
        on = pipe.generate(params, extra_cond=extra(hint))
    assert torch.equal(off, plain)
    assert not torch.equal(on, plain)
    assert torch.equal(pipe.generate(params), plain)  # the base is back after the block

    other = tmp_path / "other"
    shutil.copytree(pipe.model.folder, other)
    weights = other / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)  # other weights, same format
    other_model = load_pipeline(other).model
    with pytest.raises(ValueError, match="is a ControlNet for another base model"):
        load_controlnet(folder, other_model)
    scale = pytest.raises(ValueError, match="control scale must be a finite number >= 0, got -1")
    with scale, controlled(pipe.model, loaded, scale=-1):
        pass


def test_generate_with_a_controlnet_from_the_command_line(run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from diffuse.pngmeta import read_params

    pipe = load_pipeline(run)
    config = ControlNetConfig("layout", pipe.model.codec.downsample, pipe.model.denoiser.net.config)
    control = ControlNet.from_base(pipe.model.denoiser.net, config)
    with torch.no_grad():
        for p in control.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = save_controlnet(tmp_path / "cn", control, pipe.model)
    scene = sample_split_scene(7, 4, "heldout")
    Image.fromarray(render_scene(scene, pipe.size)).save(tmp_path / "scene.png")
    prompt = caption(scene, 7, 4)
    base = ["generate", prompt, "--model", str(run), "--steps", "2", "--no-progress"]
    ctl = ["--controlnet", str(folder), "--control", str(tmp_path / "scene.png")]

    def pixels(path):
        return np.asarray(Image.open(path))

    assert main([*base, "-o", str(tmp_path / "plain.png")]) == 0
    assert main([*base, *ctl, "--control-scale", "0", "-o", str(tmp_path / "zero.png")]) == 0
    assert np.array_equal(pixels(tmp_path / "zero.png"), pixels(tmp_path / "plain.png"))
    assert main([*base, *ctl, "-o", str(tmp_path / "on.png")]) == 0
    stored = read_params(tmp_path / "on.png")
    assert stored["control_kind"] == "layout" and len(stored["control_hash"]) == 16
    again = tmp_path / "again.png"
    assert (
        main(
            [
                "generate",
                "--from-png",
                str(tmp_path / "on.png"),
                "--model",
                str(run),
                "-o",
                str(again),
                "--no-progress",
            ]
        )
        == 0
    )
    assert np.array_equal(pixels(again), pixels(tmp_path / "on.png"))
    assert not np.array_equal(pixels(again), pixels(tmp_path / "plain.png"))
    bad = tmp_path / "bad.png"
    assert main([*base, *ctl, "--control-scale", "-2", "-o", str(bad)]) == 2
    assert "control scale must be a finite number >= 0, got -2.0" in capsys.readouterr().err
    assert main([*base, "--controlnet", str(folder), "-o", str(bad)]) == 2
    assert "go together" in capsys.readouterr().err
    assert not bad.exists()
