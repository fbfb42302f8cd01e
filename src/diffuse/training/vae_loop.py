"""Training the KL autoencoder of latent diffusion: `diffuse train` on a recipe with a [vae] table.

The same run folder, data order, checkpoints, resume, time budget, logging and Ctrl-C handling
as diffusion training (the shared `diffuse.training.run_loop.run_steps`), with the
autoencoder's loss (`diffuse.training.vae_loss`): L1 plus
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffuse.codecs.vae import VAE, load_vae, save_vae
from diffuse.config import ConfigError, VAETrainConfig, to_dict
from diffuse.training import checkpoint as ckpt
from diffuse.training import dist
from diffuse.training.counter_rng import mix_seeds
from diffuse.training.data import BatchOrder, TrainData
from diffuse.training.datasets import build_dataset
from diffuse.training.inputs import config_differences
from diffuse.training.loop_state import LoopState, load_resume_checkpoint
from diffuse.training.model import count_parameters
from diffuse.training.run_folder import open_run
from diffuse.training.run_loop import NonFiniteError, StepReport, interruptible, run_steps
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
    Raises:
        TrainingInterrupted: Ctrl-C; the newest checkpoint is intact, resume continues it.
    """
    out = Path(out)
    with interruptible(out):
        return _train_vae(cfg, out, resume, progress is not False)


def _train_vae(cfg: VAETrainConfig, out: Path, resume: bool, show: bool) -> VAETrainResult:
    """`train_vae` inside the interrupt guard."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info = dist.DistInfo(device=dist.pick_device(cfg.train.device))
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
    order = BatchOrder(len(data), cfg.optim.batch_size, cfg.train.seed, data.dataset.fingerprint())
    has_run = open_run(out, cfg, resume, info)
    steps = _VAESteps(cfg, out, info.device, data, order)
    loop = LoopState()
    if has_run:
        found = load_resume_checkpoint(out, info, map_location=info.device)
        if found is not None:
            loop = steps.restore(found)
    try:
        loop = run_steps(
            cfg, out, loop, steps, steps.save, info=info, resumed=has_run, show_progress=show
        )
    finally:
        data.close()
    model_dir = _export(steps.vae, cfg, data, info.device, out)
    return VAETrainResult(out, loop.step, model_dir, steps.last_loss)


class _VAESteps:
    """One optimizer step of autoencoder training (a `run_loop.StepFn`) and its checkpoint."""

    def __init__(
        self,
        cfg: VAETrainConfig,
        out: Path,
        device: torch.device,
        data: TrainData,
        order: BatchOrder,
    ) -> None:
        self.cfg, self.out, self.device, self.data, self.order = cfg, out, device, data, order
        o = cfg.optim
        torch.manual_seed(cfg.train.seed)
        vae = VAE(cfg.vae)
        if cfg.train.init:
            _load_init_codec(cfg.train.init, vae)
        self.vae = vae.to(device)
        self.vae.encoder.requires_grad_(not cfg.finetune.decoder_only)
        self.trained = [p for p in self.vae.parameters() if p.requires_grad]
        self.loss_fn = VAELoss(cfg.loss, cfg.vae.in_channels).to(device)
        self.optimizer = torch.optim.AdamW(
            self.trained, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
        disc = self.loss_fn.discriminator
        self.critic_opt = (
            torch.optim.AdamW(disc.parameters(), lr=o.lr, betas=(0.5, 0.9)) if disc else None
        )
        self.last_loss = math.nan
        logger.info(
            "autoencoder: %.2fM parameters (%.2fM trained), f=%d, %d latent channels; %d images "
            "of %d px",
            count_parameters(self.vae) / 1e6,
            sum(p.numel() for p in self.trained) / 1e6,
            cfg.vae.downsample,
            cfg.vae.latent_channels,
            len(data),
            data.image_size,
        )

    def __call__(self, step: int, lr: float, log: bool) -> StepReport:
        """Run 0-based step `step` at learning rate `lr`; PSNR and loss parts when `log`."""
        cfg, vae, loss_fn = self.cfg, self.vae, self.loss_fn
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        indices, _ = self.order.shard(step, 0, 1)
        noise = torch.Generator().manual_seed(mix_seeds(cfg.train.seed, step, 0x7AE))
        flips = torch.rand(len(indices), generator=noise) < 0.5 if cfg.data.flip else None
        images = self.data.batch(indices, flips)[0].to(self.device)
        vae.train()
        recon, posterior = vae(images, noise)
        loss, parts = loss_fn.autoencoder(images, recon, posterior.kl(), step)
        if not math.isfinite(float(loss.detach())):
            raise NonFiniteError(
                f"step {step + 1}: non-finite autoencoder loss {float(loss.detach())}; "
                "lower optim.lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trained, cfg.optim.grad_clip)
        self.optimizer.step()
        if self.critic_opt is not None and loss_fn.disc_active(step):
            critic = loss_fn.critic(images, recon)
            self.critic_opt.zero_grad(set_to_none=True)
            critic.backward()
            self.critic_opt.step()
            parts["critic"] = float(critic.detach())
        self.last_loss = float(loss.detach())
        fields: dict[str, float] = {}
        if log:
            with torch.no_grad():
                fields["psnr"] = round(float(psnr(recon, images).mean()), 3)
            fields.update({k: round(v, 6) for k, v in parts.items()})
        return StepReport(self.last_loss, len(indices), fields)

    def save(self, at_step: int, loop_entries: dict[str, Any]) -> None:
        """Write the checkpoint of `at_step`."""
        weights = {k: v.detach().cpu() for k, v in self.vae.state_dict().items()}
        extra = {**loop_entries, "optimizer": self.optimizer.state_dict()}
        if self.critic_opt is not None:
            extra["critic"] = self.loss_fn.state_dict()
            extra["critic_optimizer"] = self.critic_opt.state_dict()
        ckpt.save_checkpoint(
            self.out,
            at_step,
            model=weights,
            ema=weights,  # the autoencoder keeps no average: both are the trained weights
            config={"recipe": to_dict(self.cfg)},
            state=extra,
            keep=self.cfg.checkpoint.keep,
        )

    def restore(self, found: ckpt.Checkpoint) -> LoopState:
        """Load a checkpoint's weights and optimizer states; returns its loop state."""
        self.vae.load_state_dict(found.model)
        self.optimizer.load_state_dict(found.state["optimizer"])
        if self.critic_opt is not None:
            self.loss_fn.load_state_dict(found.state["critic"])
            self.critic_opt.load_state_dict(found.state["critic_optimizer"])
        return LoopState.from_state({"step": found.step, **found.state})


def _export(
    vae: VAE, cfg: VAETrainConfig, data: TrainData, device: torch.device, out: Path
) -> Path:
    """Fit the latent scale and shift (or keep the initial codec's), then write RUN/model."""
    vae.eval()
    if cfg.finetune.decoder_only:  # the latent space is the initial codec's, normalisation too
        stats = vae.stats()
    else:
        count = min(len(data), STATS_IMAGES)
        sample = torch.cat(
            [data.batch(list(range(i, min(i + 256, count))))[0] for i in range(0, count, 256)]
        )
        stats = vae.fit_latent_stats(sample.to(device))
    logger.info("latent shift %s, scale %s", stats.shift, stats.scale)
    return save_vae(vae.cpu(), out / "model")


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
