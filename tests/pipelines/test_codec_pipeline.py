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
from diffuse.training.model import build_network

TINY_VAE = {"in_channels": 1, "base_channels": 8, "channel_mult": (1, 1, 2), "num_groups": 4}


@pytest.fixture(scope="module")
def pixel_model(class_model) -> Path:
    return class_model[1] / "model"


@pytest.fixture
def make_latent(class_model, tmp_path):
    """A latent variant of the class model: a network on [4, 4, 4] latents and a VAE (f = 4,
    one image channel) in its vae/ subfolder."""
    recipe, run = class_model

    def make(latent_channels: int = 4) -> Path:
        folder = tmp_path / "latent"
        torch.manual_seed(0)
        net, _ = build_network(
            load_recipe(None, recipe).model, in_channels=4, image_size=4, num_classes=3
        )
        save_network(net, folder)
        info = json.loads((run / "model" / "diffusion.json").read_text())
        info.update(channels=4, image_size=4, codec="vae")
        (folder / "diffusion.json").write_text(json.dumps(info))
        save_vae(VAE(VAEConfig(latent_channels=latent_channels, **TINY_VAE)), folder / "vae")
        return folder

    return make


def test_pixel_models_get_the_identity_codec(pixel_model):
    model = load_trained(pixel_model)
    assert isinstance(model.codec, IdentityCodec) and model.image_size == 8
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model.decode(x), x.clamp(-1, 1))  # pixels are the images, clamped


def test_generate_returns_latents_unclamped(make_latent, monkeypatch):
    # Unit-variance latents often lie beyond [-1, 1]; clamping them before decoding drew blotchy,
    # off-colour objects (the bug that held the first latent Shapes model at 22%).
    model = load_trained(make_latent())
    monkeypatch.setattr(model.denoiser, "forward", lambda x, level, cond=None: x * 0 + 3.0)
    latents = generate(model.denoiser, model.shape, [0, 1], labels=[0, 1], steps=3)
    assert torch.allclose(latents, torch.full_like(latents, 3.0))
    images = model.decode(latents)
    assert images.shape == (2, 1, 16, 16) and images.abs().max() <= 1


def test_latent_models_decode_through_their_vae_with_the_same_code(pixel_model, make_latent):
    model = load_trained(make_latent())
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


def test_diffuse_sample_writes_decoded_images_of_a_latent_model(make_latent, tmp_path):
    folder = make_latent()
    out = tmp_path / "grid.png"
    args = ["sample", "--model", str(folder), "-n", "2", "--steps", "2", "-o", str(out)]
    assert main(args) == 0
    from PIL import Image

    with Image.open(out) as im:
        assert im.height == 16 + 2 * 2  # one row of 16 px images with the grid padding


def test_a_codec_that_does_not_match_the_latents_is_a_clear_error(make_latent):
    folder = make_latent(latent_channels=8)
    with pytest.raises(ValueError, match=r"makes latents \(4, 4, 4\) but the codec 'vae'"):
        load_trained(folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match="VAE file missing"):
        load_trained(folder)


def test_a_latent_models_images_do_not_depend_on_the_batch(make_latent):
    # The bundled default is a latent model: same seed, same pixels, alone or in any batch.
    model = load_trained(make_latent())

    def images(seeds):
        latents = generate(
            model.denoiser, model.shape, seeds, labels=[0] * len(seeds), steps=3, guidance=1.0
        )
        return model.decode(latents)

    alone, batch, other = images([5]), images([3, 5, 7]), images([7, 5])
    assert torch.equal(alone[0], batch[1]) and torch.equal(alone[0], other[1])
