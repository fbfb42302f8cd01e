"""Training the KL autoencoder of latent diffusion: `diffuse train` on a recipe with a [vae] table.

The same run folder, data order, checkpoints, resume and time budget as diffusion training
(`diffuse.training.loop`), with the autoencoder's loss (`diffuse.training.vae_loss`): L1 plus
(1 - SSIM), a small KL, and a hinge patch discriminator from `loss.disc_start` steps on when
`loss.disc` > 0. At the end the latent scale and shift are fitted on training images and the
codec is written to RUN/model (`vae.safetensors`, `vae.json`), loadable with
`diffuse.codecs.vae.load_vae`. With `train.init` a run starts from a trained codec; with
`finetune.decoder_only` as well it trains the decoder alone and keeps the initial codec's
encoder and latent scale and shift, so diffusion models trained on its latents stay valid.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from diffuse.codecs.vae import VAE, load_vae, save_vae
from diffuse.config import ConfigError, VAETrainConfig, to_dict
from diffuse.training import checkpoint as ckpt
from diffuse.training.counter_rng import mix_seeds
from diffuse.training.data import BatchOrder, TrainData, build_dataset
from diffuse.training.dist import pick_device
from diffuse.training.loop import NonFiniteError, config_differences, lr_at, prepare_run_dir
from diffuse.training.model import count_parameters
from diffuse.training.progress import MetricsLog, Progress
from diffuse.training.vae_loss import VAELoss, psnr

logger = logging.getLogger(__name__)

__all__ = ["VAETrainResult", "train_vae"]

STATS_IMAGES = 2048  # training images the latent scale and shift are fitted on


@dataclass
class VAETrainResult:
    """What `train_vae` leaves behind."""

    run_dir: Path
    step: int
    model_dir: Path
    last_loss: float


def train_vae(
    cfg: VAETrainConfig, out: str | Path, resume: bool = False, progress: bool | None = None
) -> VAETrainResult:
    """Train the autoencoder of `cfg` into the run folder `out` (one process, CPU or GPU).

    Args:
        cfg: the recipe.
        out: run folder (created; an existing run needs `resume`).
        resume: continue from the newest valid checkpoint.
        progress: show a progress bar (None: when stderr is a terminal).
    Returns:
        VAETrainResult; the codec is in `out/model`.
    """
    out = Path(out)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    o = cfg.optim
    data = TrainData(build_dataset(cfg.data, seed=cfg.train.seed), cfg.data)
    if data.image_size % cfg.vae.downsample:
        raise ValueError(
            f"data.resolution {data.image_size} is not divisible by vae.downsample "
            f"{cfg.vae.downsample}"
        )
    if data.channels != cfg.vae.in_channels:
        raise ValueError(
            f"the data has {data.channels} channels but vae.in_channels = {cfg.vae.in_channels}"
        )
    order = BatchOrder(len(data), o.batch_size, cfg.train.seed, data.dataset.fingerprint())
    has_run = prepare_run_dir(out, cfg, resume)
    removed = ckpt.remove_stale_temporaries(out) if has_run else 0
    if removed:
        logger.info("removed %d interrupted checkpoint write(s)", removed)

    torch.manual_seed(cfg.train.seed)
    vae = VAE(cfg.vae)
    if cfg.train.init:
        _load_init_codec(cfg.train.init, vae)
    vae = vae.to(device)
    decoder_only = cfg.finetune.decoder_only
    vae.encoder.requires_grad_(not decoder_only)
    trained = [p for p in vae.parameters() if p.requires_grad]
    loss_fn = VAELoss(cfg.loss, cfg.vae.in_channels).to(device)
    optimizer = torch.optim.AdamW(
        trained, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    )
    critic_opt = (
        torch.optim.AdamW(loss_fn.discriminator.parameters(), lr=o.lr, betas=(0.5, 0.9))
        if loss_fn.discriminator is not None
        else None
    )
    logger.info(
        "autoencoder: %.2fM parameters (%.2fM trained), f=%d, %d latent channels; %d images "
        "of %d px",
        count_parameters(vae) / 1e6,
        sum(p.numel() for p in trained) / 1e6,
        cfg.vae.downsample,
        cfg.vae.latent_channels,
        len(data),
        data.image_size,
    )
    step, elapsed = 0, 0.0
    if has_run:
        state = ckpt.load_latest(out, map_location=device)
        if state is not None:
            vae.load_state_dict(state.model)
            optimizer.load_state_dict(state.state["optimizer"])
            if critic_opt is not None:
                loss_fn.load_state_dict(state.state["critic"])
                critic_opt.load_state_dict(state.state["critic_optimizer"])
            step, elapsed = state.step, float(state.state.get("elapsed", 0.0))
            logger.info("resumed from step %d", step)

    def save(at_step: int) -> None:
        weights = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
        extra = {"optimizer": optimizer.state_dict(), "elapsed": elapsed + time.perf_counter() - t0}
        if critic_opt is not None:
            extra["critic"] = loss_fn.state_dict()
            extra["critic_optimizer"] = critic_opt.state_dict()
        ckpt.save_checkpoint(
            out,
            at_step,
            model=weights,
            ema=weights,  # the autoencoder keeps no average: both are the trained weights
            config={"recipe": to_dict(cfg)},
            state=extra,
            keep=cfg.checkpoint.keep,
        )

    metrics = MetricsLog(out / "metrics.jsonl", resume_step=step if has_run else None)
    bar = Progress(cfg.train.steps, step, enabled=progress is not False)
    t0 = t_log = time.perf_counter()
    images_log, last_loss, final_step = 0, math.nan, cfg.train.steps
    try:
        while step < cfg.train.steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            indices, _ = order.shard(step, 0, 1)
            noise = torch.Generator().manual_seed(mix_seeds(cfg.train.seed, step, 0x7AE))
            flips = torch.rand(len(indices), generator=noise) < 0.5 if cfg.data.flip else None
            images = data.batch(indices, flips)[0].to(device)
            vae.train()
            recon, posterior = vae(images, noise)
            loss, parts = loss_fn.autoencoder(images, recon, posterior.kl(), step)
            if not math.isfinite(float(loss.detach())):
                raise NonFiniteError(
                    f"step {step + 1}: non-finite autoencoder loss {float(loss.detach())}; "
                    "lower optim.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trained, o.grad_clip)
            optimizer.step()
            if critic_opt is not None and loss_fn.disc_active(step):
                critic = loss_fn.critic(images, recon)
                critic_opt.zero_grad(set_to_none=True)
                critic.backward()
                critic_opt.step()
                parts["critic"] = float(critic.detach())
            step += 1
            images_log += len(indices)
            last_loss = float(loss.detach())
            if step % cfg.log.every_steps == 0 or step == final_step:
                now = time.perf_counter()
                ips = images_log / max(now - t_log, 1e-9)
                with torch.no_grad():
                    batch_psnr = float(psnr(recon, images).mean())
                record = {"step": step, "loss": last_loss, "psnr": round(batch_psnr, 3)}
                record.update({k: round(v, 6) for k, v in parts.items()})
                record.update(
                    {"images_per_s": round(ips, 2), "time_s": round(elapsed + now - t0, 3)}
                )
                metrics.write(record)
                bar.update(step, last_loss, ips)
                t_log, images_log = now, 0
                spent = elapsed + now - t0
                if cfg.train.max_minutes and spent >= 60.0 * cfg.train.max_minutes:
                    logger.info("train.max_minutes reached at step %d; finishing", step)
                    final_step = step
            if step % cfg.checkpoint.every_steps == 0 or step == final_step:
                save(step)
            if step == final_step:
                break
    finally:
        bar.close()
        data.close()
        metrics.close()

    vae.eval()
    if decoder_only:  # the latent space is the initial codec's, normalisation included
        stats = vae.stats()
    else:
        count = min(len(data), STATS_IMAGES)
        sample = torch.cat(
            [data.batch(list(range(i, min(i + 256, count))))[0] for i in range(0, count, 256)]
        )
        stats = vae.fit_latent_stats(sample.to(device))
    logger.info("latent shift %s, scale %s", stats.shift, stats.scale)
    model_dir = save_vae(vae.cpu(), out / "model")
    return VAETrainResult(out, step, model_dir, last_loss)


def _load_init_codec(init: str, vae: VAE) -> None:
    """Copy the weights and latent scale and shift of the codec folder `init` into `vae`, whose
    config it must equal (ConfigError naming each differing field otherwise)."""
    try:
        trained = load_vae(Path(init).expanduser())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"train.init = {init!r}: {err}") from None
    have, want = dataclasses.asdict(trained.cfg), dataclasses.asdict(vae.cfg)
    if have != want:
        diff = config_differences(have, want)
        raise ConfigError(f"train.init = {init!r}: its codec differs from the recipe's ({diff})")
    vae.load_state_dict(trained.state_dict())
    logger.info("initial codec weights from %s", init)
