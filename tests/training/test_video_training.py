"""Video training: Moving Shapes clips through the real recipe, per-frame latents, image steps,
first-frame dropout, inflation of an image model by train.init, and resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import diffuse.training.data as data_module
from diffuse.cli import main
from diffuse.config import ConfigError, DataConfig, load_recipe
from diffuse.model_folder import load_model
from diffuse.nets.temporal import fold_frames, unfold_frames
from diffuse.training.build import read_inputs
from diffuse.training.data import TrainData
from diffuse.training.datasets import build_dataset
from diffuse.training.model import build_network
from text_recipe import train_args
from video_recipe import RECIPE, TINY, video_train_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("t2v") / "run"
    assert main(video_train_args(out)) == 0
    return out


def test_clip_batches_and_per_frame_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_recipe(RECIPE, TINY).data
    data = TrainData(build_dataset(cfg, seed=0), cfg)
    x, labels, _ = data.batch([0, 3])
    assert x.shape == (2, 3, 4, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert data.item_shape == (3, 4, 16, 16)
    assert len(data.captions()) == 8 and all(data.captions())

    class HalveCodec(torch.nn.Module):  # a stand-in codec: 2x average pooling per frame
        source = str(RECIPE.parent)

        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def encode(self, images: torch.Tensor) -> torch.Tensor:
            assert images.ndim == 4  # frames are encoded one by one
            return torch.nn.functional.avg_pool2d(images, 2)

    monkeypatch.setattr(data_module, "file_sha256", lambda path: "0" * 64)
    data.encode_latents(HalveCodec(), None)
    z, _, _ = data.batch([3])
    want = unfold_frames(torch.nn.functional.avg_pool2d(fold_frames(x[1:]), 2), 4)
    torch.testing.assert_close(z, want.half().float())
    assert data.item_shape == (3, 4, 8, 8)


def test_training_writes_a_video_model(run: Path) -> None:
    model = load_model(run / "model")
    cfg = model.denoiser.net.config
    assert cfg.temporal and cfg.first_frame and cfg.max_frames == 4
    assert (run / "checkpoints").is_dir()
    # Resume continues from the last checkpoint to a longer run.
    assert main(video_train_args(run, "train.steps=3") + ["--resume"]) == 0


def test_inflating_the_image_model_keeps_it_exactly(tmp_path: Path) -> None:
    image_run = tmp_path / "image"
    assert (
        main(train_args(image_run, "train.steps=1", "data.size=8", "checkpoint.every_steps=1")) == 0
    )
    image = load_model(image_run / "model").denoiser.net
    recipe = load_recipe(
        RECIPE,
        [
            *TINY,
            f"train.init='{image_run / 'model'}'",
            "model.train_layers='temporal'",
            "model.overrides={base_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
            "attention_levels=[1], head_channels=16, num_groups=8, dropout=0.0, temporal=true, "
            "max_frames=4, first_frame=true}",
            f"data.resolution={image.config.image_size}",
        ],
    )
    inputs = read_inputs(recipe, build_network)
    video = inputs.net.eval()
    trainable = {n for n, p in video.named_parameters() if p.requires_grad}
    assert trainable and all(
        "temporal" in n or n.startswith(("frame_embed", "conv_in")) for n in trainable
    )
    x = torch.randn(2, 3, 4, 16, 16)
    c = torch.rand(2)
    ctx = torch.randn(2, 6, image.config.context_dim)
    pooled = torch.randn(2, image.config.pooled_dim)
    with torch.no_grad():
        out = video(x, c, context=ctx, pooled=pooled, first_frame=torch.randn(2, 3, 16, 16))
        ref = image(
            fold_frames(x),
            c.repeat_interleave(4),
            context=ctx.repeat_interleave(4, 0),
            pooled=pooled.repeat_interleave(4, 0),
        )
    torch.testing.assert_close(out, unfold_frames(ref, 4), rtol=0, atol=1e-5)


def test_bad_clip_settings() -> None:
    with pytest.raises(ConfigError, match="data.frames"):
        DataConfig(source="moving-shapes", frames=0)
    with pytest.raises(ConfigError, match="data.frames"):
        DataConfig(source="scenes", frames=8)
    with pytest.raises(ConfigError, match="reverse the motion"):
        DataConfig(source="moving-shapes", frames=8, flip=True)
    with pytest.raises(ConfigError, match="image_fraction"):
        DataConfig(source="moving-shapes", frames=8, image_fraction=1.0)
    recipe = load_recipe(RECIPE, [*TINY, "model.overrides={temporal=false}"])
    recipe = dataclasses.replace(
        recipe, model=dataclasses.replace(recipe.model, train_layers="temporal")
    )
    with pytest.raises(ConfigError, match="needs a video U-Net"):
        read_inputs(recipe, build_network)
