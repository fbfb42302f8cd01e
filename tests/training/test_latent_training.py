"""Latent diffusion training: data encoded once through a VAE (cached in the run), the model
folder carries its codec, and pipelines decode through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffuse.cli.train import draw_sample_grid
from diffuse.config import ConfigError, load_recipe
from diffuse.pipelines.sample import generate, load_trained
from diffuse.training.data import TrainData
from diffuse.training.loop import train
from diffuse.training.vae_loop import train_vae

VAE_RECIPE = str(Path(__file__).resolve().parents[2] / "configs" / "shapes-vae.toml")
VAE_TINY = [
    "vae.base_channels=8",
    "vae.channel_mult=[1, 1, 2]",
    "vae.num_groups=4",
    "data.source='procedural'",
    "data.size=16",
    "data.resolution=16",
    "data.channels=3",
    "optim.batch_size=8",
    "train.steps=2",
    "train.max_minutes=0",
    "train.threads=1",
]


def diffusion_recipe(codec: Path, *extra: str):
    return load_recipe(
        None,
        [
            "model.preset='unet-tiny'",
            "model.overrides={base_channels=8, channel_mult=[1, 2], num_groups=4, "
            "head_channels=8, attention_levels=[1]}",
            "data.source='procedural'",
            "data.resolution=16",
            "data.size=16",
            "data.channels=3",
            "data.num_classes=2",
            "data.flip=true",
            f"data.codec='{codec}'",
            "optim.batch_size=8",
            "train.steps=2",
            "train.threads=1",
            "checkpoint.every_steps=1",
            "sample.every_steps=2",
            "sample.seeds=[0, 1]",
            "sample.steps=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae") / "run"
    return train_vae(load_recipe(VAE_RECIPE, VAE_TINY), run, progress=False).model_dir


def test_latent_run_caches_latents_and_ships_its_codec(codec_dir, tmp_path):
    run = tmp_path / "run"
    result = train(diffusion_recipe(codec_dir), run, on_sample=draw_sample_grid)
    assert (run / TrainData.LATENT_CACHE).is_file()
    info = json.loads((result.model_dir / "diffusion.json").read_text())
    assert (info["channels"], info["image_size"], info["codec"]) == (4, 4, "vae")
    assert (result.model_dir / "vae" / "vae.safetensors").is_file()
    assert (run / "samples").is_dir()  # grids decoded through the codec
    model = load_trained(result.model_dir)
    assert model.shape == (4, 4, 4) and model.image_size == 16
    latents = generate(model.denoiser, model.shape, [0, 1], labels=[0, 1], steps=2)
    assert model.decode(latents).shape == (2, 3, 16, 16)


def test_the_latent_cache_is_read_back_on_resume(codec_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(diffusion_recipe(codec_dir, "train.steps=1"), run)
    calls = []
    real = TrainData.batch

    def counting(self, indices, flips=None):
        if self.latents is None:
            calls.append(len(indices))  # pixel batches: only while encoding
        return real(self, indices, flips)

    monkeypatch.setattr(TrainData, "batch", counting)
    train(diffusion_recipe(codec_dir), run, resume=True)
    assert calls == []


def test_latent_batches_follow_the_flips(codec_dir):
    from diffuse.codecs.vae import load_vae
    from diffuse.training.datasets import build_dataset

    cfg = diffusion_recipe(codec_dir)
    data = TrainData(build_dataset(cfg.data), cfg.data)
    pixels = data.batch([0, 1])[0]
    codec = load_vae(codec_dir)
    data.encode_latents(codec, codec_dir.parent / "cache")
    z, labels, _ = data.batch([0, 1], torch.tensor([False, True]))
    with torch.no_grad():
        torch.testing.assert_close(z[0], codec.encode(pixels[:1])[0], atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(z[1], codec.encode(pixels[1:].flip(-1))[0], atol=2e-3, rtol=2e-3)
    assert labels.tolist() == [0, 1] and data.channels == 4 and data.image_size == 4


def test_a_bad_codec_fails_before_the_run_folder_exists(codec_dir, tmp_path):
    with pytest.raises(ConfigError, match="data.codec = .*VAE file missing"):
        train(diffusion_recipe(tmp_path / "nowhere"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="not divisible by the codec's factor 4"):
        train(diffusion_recipe(codec_dir, "data.resolution=18"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
