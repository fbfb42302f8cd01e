"""Pipelines decode through the model's codec: the identity for pixel-space models, a VAE for
latent models, through the same code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from diffuse.cli import main
from diffuse.codecs.identity import IdentityCodec
from diffuse.codecs.vae import VAE, VAEConfig, save_vae
from diffuse.config import load_recipe
from diffuse.nets.io import save_network
from diffuse.pipelines.sample import generate, load_trained
from diffuse.training.loop import train
from diffuse.training.model import build_network

RECIPE = [
    "model.preset='unet-tiny'",
    "model.overrides={base_channels=8, num_groups=4, head_channels=8}",
    "data.source='procedural'",
    "data.resolution=8",
    "data.size=16",
    "data.channels=1",
    "data.num_classes=3",
    "optim.batch_size=8",
    "train.steps=1",
    "train.threads=1",
    "checkpoint.every_steps=1",
]
TINY_VAE = {"in_channels": 1, "base_channels": 8, "channel_mult": (1, 1, 2), "num_groups": 4}


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("codec") / "pixel"
    train(load_recipe(None, RECIPE), out)
    return out / "model"


def latent_model(pixel_model: Path, folder: Path, latent_channels: int = 4) -> Path:
    """The pixel model's recipe as a latent model: a network on [4, 4, 4] latents and a VAE
    (f = 4, one image channel) in folder/vae."""
    torch.manual_seed(0)
    cfg = load_recipe(None, RECIPE)
    net, _ = build_network(cfg.model, in_channels=4, image_size=4, num_classes=3)
    save_network(net, folder)
    info = json.loads((pixel_model / "diffusion.json").read_text())
    info.update(channels=4, image_size=4, codec="vae")
    (folder / "diffusion.json").write_text(json.dumps(info))
    save_vae(VAE(VAEConfig(latent_channels=latent_channels, **TINY_VAE)), folder / "vae")
    return folder


def test_pixel_models_get_the_identity_codec(pixel_model):
    model = load_trained(pixel_model)
    assert isinstance(model.codec, IdentityCodec) and model.image_size == 8
    x = torch.randn(2, 1, 8, 8)
    assert model.decode(x) is x


def test_latent_models_decode_through_their_vae_with_the_same_code(pixel_model, tmp_path):
    model = load_trained(latent_model(pixel_model, tmp_path / "latent"))
    assert isinstance(model.codec, VAE) and model.shape == (4, 4, 4) and model.image_size == 16
    for m, side in ((load_trained(pixel_model), 8), (model, 16)):
        latents = generate(
            m.denoiser,
            m.shape,
            [0, 1],
            labels=[0, 1],
            null_label=m.null_label,
            steps=2,
            guidance=2.0,
        )
        images = m.decode(latents)
        assert images.shape == (2, 1, side, side) and torch.isfinite(images).all()


def test_diffuse_sample_writes_decoded_images_of_a_latent_model(pixel_model, tmp_path, capsys):
    folder = latent_model(pixel_model, tmp_path / "latent")
    out = tmp_path / "grid.png"
    args = ["sample", "--model", str(folder), "-n", "2", "--steps", "2", "-o", str(out)]
    assert main(args) == 0
    from PIL import Image

    with Image.open(out) as im:
        assert im.height == 16 + 2 * 2  # one row of 16 px images with the grid padding


def test_a_codec_that_does_not_match_the_latents_is_a_clear_error(pixel_model, tmp_path):
    folder = latent_model(pixel_model, tmp_path / "latent", latent_channels=8)
    with pytest.raises(ValueError, match=r"makes latents \(4, 4, 4\) but the codec 'vae'"):
        load_trained(folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match="VAE file missing"):
        load_trained(folder)
