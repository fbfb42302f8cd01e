"""`diffuse train` on an autoencoder recipe: dispatch, a real (tiny) run, resume and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffuse.cli import main
from diffuse.codecs.vae import load_vae
from diffuse.config import ConfigError, VAETrainConfig, load_recipe
from diffuse.training.vae_loop import train_vae
from diffuse.training.vae_loss import VAELoss, psnr, ssim

RECIPE = str(Path(__file__).resolve().parents[2] / "configs" / "shapes-vae.toml")

TINY = [
    "vae.base_channels=8",
    "vae.channel_mult=[1, 1, 2]",
    "vae.num_groups=4",
    "data.size=24",
    "data.resolution=16",
    "optim.batch_size=8",
    "optim.warmup_steps=0",
    "train.steps=4",
    "train.max_minutes=0",
    "train.threads=1",
    "checkpoint.every_steps=2",
    "log.every_steps=2",
]


def _cfg(*extra: str) -> VAETrainConfig:
    return load_recipe(RECIPE, [*TINY, *extra])


def test_a_vae_table_makes_an_autoencoder_recipe():
    cfg = _cfg()
    assert isinstance(cfg, VAETrainConfig)
    assert cfg.vae.base_channels == 8 and cfg.vae.channel_mult == (1, 1, 2)
    with pytest.raises(ConfigError, match="latent_channels"):
        _cfg("vae.latent_channels=2")
    with pytest.raises(ConfigError, match="loss.kl"):
        _cfg("loss.kl=-1")


def test_tiny_run_writes_a_loadable_codec_with_fitted_latent_stats(tmp_path):
    result = train_vae(_cfg(), tmp_path / "run", progress=False)
    assert result.step == 4
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4] and all("psnr" in r and "ssim" in r for r in lines)
    vae = load_vae(result.model_dir)
    from diffuse.training.datasets import ScenesDataset

    images = torch.from_numpy(ScenesDataset(24, 16).render_all(workers=1)).permute(0, 3, 1, 2)
    images = images.float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(images)
        assert z.shape == (24, 4, 4, 4)
        assert vae.decode(z).shape == images.shape
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3, rtol=0)


def test_resume_continues_from_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train_vae(_cfg("train.steps=2"), run, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_vae(_cfg(), run, progress=False)
    result = train_vae(_cfg(), run, resume=True, progress=False)
    assert result.step == 4
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]


def test_discriminator_switches_on_after_its_warm_up(tmp_path):
    cfg = _cfg("loss.disc=0.1", "loss.disc_start=2")
    result = train_vae(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "critic" not in lines[0] and "critic" in lines[1] and "gen" in lines[1]
    assert result.step == 4


def test_cli_trains_an_autoencoder_and_refuses_a_resolution_the_codec_cannot_take(tmp_path, capsys):
    args = ["train", RECIPE, "--out", str(tmp_path / "a"), "--no-progress"]
    sets = [x for item in TINY for x in ("--set", item)]
    assert main(args + sets) == 0
    assert "autoencoder in" in capsys.readouterr().out
    bad = ["train", RECIPE, "--out", str(tmp_path / "b"), "--no-progress"]
    assert main(bad + sets + ["--set", "data.resolution=18"]) == 2
    assert "not divisible by vae.downsample 4" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_ssim_and_psnr_behave():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    assert float(ssim(a, torch.zeros_like(a)).max()) < 0.5
    assert torch.isfinite(psnr(a, a)).all() and float(psnr(a, a + 0.02).mean()) == pytest.approx(
        40.0, abs=0.01
    )
    with pytest.raises(ValueError, match="ssim needs"):
        ssim(a, a[:, :2])


def test_vae_loss_parts():
    cfg = _cfg("loss.disc=0.5", "loss.disc_start=1").loss
    loss = VAELoss(cfg)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    total, parts = loss.autoencoder(images, images.clone(), torch.zeros(2), step=0)
    assert float(total) == pytest.approx(0.0, abs=1e-6) and "gen" not in parts
    total, parts = loss.autoencoder(images, images.clone(), torch.zeros(2), step=1)
    assert "gen" in parts


def test_decoder_only_finetuning_keeps_the_encoder_and_the_latent_space(tmp_path):
    base = train_vae(_cfg(), tmp_path / "base", progress=False).model_dir
    tuned = train_vae(
        _cfg(f"train.init={base}", "finetune.decoder_only=true", "train.seed=1"),
        tmp_path / "tuned",
        progress=False,
    ).model_dir
    before, after = load_vae(base), load_vae(tuned)
    assert before.stats() == after.stats()  # the normalisation is not refitted
    enc_before, enc_after = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_before[k], enc_after[k]) for k in enc_before)
    dec_before, dec_after = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_before[k], dec_after[k]) for k in dec_before)


def test_codec_finetuning_errors_name_the_bad_setting(tmp_path):
    with pytest.raises(ConfigError, match="finetune.decoder_only.*needs train.init"):
        _cfg("finetune.decoder_only=true")
    with pytest.raises(ConfigError, match="VAE file missing"):
        train_vae(_cfg(f"train.init={tmp_path / 'nothing'}"), tmp_path / "a", progress=False)
    base = train_vae(_cfg(), tmp_path / "base", progress=False).model_dir
    with pytest.raises(ConfigError, match="latent_channels: 4 there, 8 here"):
        train_vae(
            _cfg(f"train.init={base}", "vae.latent_channels=8"), tmp_path / "b", progress=False
        )
