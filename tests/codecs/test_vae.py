"""The KL autoencoder codec: shapes, latent normalisation round trip, save/load, errors."""

import pytest
import torch

from diffuse.codecs.vae import VAE, VAEConfig, load_vae, save_vae

TINY = VAEConfig(base_channels=8, channel_mult=(1, 1, 2), num_groups=4)


def test_encode_decode_shapes_and_latent_scale_round_trip():
    torch.manual_seed(0)
    vae = VAE(TINY).eval()
    images = torch.rand(6, 3, 16, 16) * 2 - 1
    assert vae.latent_shape(16) == (4, 4, 4)
    stats = vae.fit_latent_stats(images)
    z = vae.encode(images)
    assert z.shape == (6, 4, 4, 4)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    raw = vae.posterior(images).mean
    shift = torch.tensor(stats.shift).reshape(1, 4, 1, 1)
    scale = torch.tensor(stats.scale).reshape(1, 4, 1, 1)
    torch.testing.assert_close(z * scale + shift, raw, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert vae.decode(z).shape == images.shape
        recon, post = vae(images, torch.Generator().manual_seed(0))
    assert recon.shape == images.shape and post.kl().shape == (6,)


def test_save_load_round_trip(tmp_path):
    vae = VAE(TINY).eval()
    vae.fit_latent_stats(torch.rand(4, 3, 16, 16) * 2 - 1)
    z = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        expected = vae.decode(z)
        loaded = load_vae(save_vae(vae, tmp_path / "vae"))
        torch.testing.assert_close(loaded.decode(z), expected)


def test_bad_inputs_name_the_values(tmp_path):
    vae = VAE(TINY)
    with pytest.raises(ValueError, match="18"):
        vae.latent_shape(18)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
        vae.decode(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="downsample must be 4 or 8, got 2"):
        VAEConfig(downsample=2)
    with pytest.raises(FileNotFoundError, match="vae.json"):
        load_vae(tmp_path)
    (tmp_path / "vae.json").write_text("{broken")
    (tmp_path / "vae.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="damaged"):
        load_vae(tmp_path)


def test_decoding_is_sliced_and_the_slices_do_not_change_the_result(monkeypatch):
    torch.manual_seed(0)
    vae = VAE(TINY, decode_batch=3).eval()
    z = torch.randn(8, 4, 4, 4)
    seen = []
    real = vae.decoder.forward

    def spy(x):
        seen.append(x.shape[0])
        return real(x)

    monkeypatch.setattr(vae.decoder, "forward", spy)
    with torch.no_grad():
        sliced = vae.decode(z)
        vae.decode_batch = 8
        whole = vae.decode(z)
    # decode_batch latents at a time, each slice padded to whole samples per thread
    unit = max(2, torch.get_num_threads())
    assert seen == [-(-n // unit) * unit for n in (3, 3, 2, 8)]
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)


def test_encode_decode_are_finite_and_a_wrong_latent_shape_is_refused():
    torch.manual_seed(0)
    vae = VAE(TINY).eval()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(images)
        out = vae.decode(z)
    assert z.dtype == torch.float32 and torch.isfinite(z).all() and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"latents must be \[B, 4, H, W\]"):
        vae.decode(torch.randn(2, 3, 4, 4))


def test_tiled_decoding_blends_tiles_exactly_for_a_local_decoder():
    # A decoder with no spatial context (nearest up-sampling, 1x1 conv): tiles must join
    # seamlessly, whatever the size, including sides that are not a multiple of the stride.
    torch.manual_seed(0)
    vae = VAE(TINY, tile_size=16, tile_overlap=4).eval()
    vae.decoder = torch.nn.Sequential(
        torch.nn.Upsample(scale_factor=4, mode="nearest"), torch.nn.Conv2d(4, 3, 1)
    )
    z = torch.randn(2, 4, 41, 23)
    with torch.no_grad():
        tiled = vae.decode(z)
        vae.tile_size = 0
        whole = vae.decode(z)
    assert tiled.shape == (2, 3, 164, 92)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_large_latents_go_through_the_decoder_in_tiles(monkeypatch):
    torch.manual_seed(0)
    vae = VAE(TINY, tile_size=8, tile_overlap=2).eval()
    seen = []
    real = vae.decoder.forward

    def spy(x):
        seen.append(tuple(x.shape))
        return real(x)

    monkeypatch.setattr(vae.decoder, "forward", spy)
    with torch.no_grad():
        small = vae.decode(torch.randn(1, 4, 8, 8))  # not above tile_size: one call
        large = vae.decode(torch.randn(1, 4, 20, 14))
    b = max(2, torch.get_num_threads())  # a lone latent is padded to whole samples per thread
    assert seen[0] == (b, 4, 8, 8) and small.shape == (1, 3, 32, 32)
    # rows start at 0, 6, 12 (last ends at 20); columns at 0, 6 (ends at 14)
    assert seen[1:] == [(b, 4, 8, 8)] * 6
    assert large.shape == (1, 3, 80, 56) and torch.isfinite(large).all()


def test_a_tile_overlap_as_large_as_the_tile_is_refused():
    vae = VAE(TINY, tile_size=8, tile_overlap=8).eval()
    with pytest.raises(ValueError, match="tile_overlap"):
        vae.decode(torch.randn(1, 4, 16, 16))
