"""The diffusion trainer: `train(cfg, out)`.

    data -> process.add_noise -> denoiser -> weighted loss -> AdamW -> EMA -> checkpoint

This module builds the run (data, codec, text encoder, network, optimizer) and defines one
optimizer step; the shared skeleton (`run_loop.run_steps`) drives the steps, logging, time
budget, checkpoints and Ctrl-C, and `export.write_model` writes the final model folder. Sample
grids are drawn by a callback the caller passes (`on_sample`), so the trainer knows nothing of
pipelines.

Determinism: everything random in step k is drawn from seeds that depend only on
(seed, k, global position in the batch), and the data order only on (seed, k). So a run resumed
from a checkpoint repeats the uninterrupted run's losses exactly, and N ranks splitting a
global batch see the same samples, noise and times as one process running the whole batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffuse.codecs.text_encoder import TextEncoder
from diffuse.codecs.vae import VAE
from diffuse.config import SampleConfig, TrainConfig
from diffuse.controlnet_folder import save_controlnet
from diffuse.denoiser import EXTRA_INPUTS, Denoiser
from diffuse.losses import denoising_loss
from diffuse.processes import NoiseProcess
from diffuse.training import checkpoint as ckpt
from diffuse.training import dist
from diffuse.training.build import Run, assemble, read_inputs, set_threads
from diffuse.training.counter_rng import batch_keys, mix_seeds, stream_normal, stream_uniform
from diffuse.training.export import write_model
from diffuse.training.inputs import (
    check_sample_settings,
)
from diffuse.training.loop_state import (
    LoopState,
    latest_step,
    load_resume_checkpoint,
    rng_state,
    set_rng_state,
)
from diffuse.training.model import build_network
from diffuse.training.run_folder import open_run, prepare_run_dir
from diffuse.training.run_loop import (
    NonFiniteError,
    StepReport,
    TrainingInterrupted,
    interruptible,
    lr_at,
    run_steps,
)

logger = logging.getLogger(__name__)

__all__ = [
    "NonFiniteError",
    "SampleRequest",
    "TrainResult",
    "TrainingInterrupted",
    "draw_per_sample",
    "lr_at",
    "prepare_run_dir",
    "train",
]


@dataclass
class TrainResult:
    """What `train` leaves behind."""

    run_dir: Path
    step: int
    model_dir: Path | None
    last_loss: float
    nonfinite_steps: int


@dataclass
class SampleRequest:
    """What a sample-grid callback (`train(..., on_sample=...)`) is given.

    Called on rank 0 (on every rank under FSDP, whose forward passes are collective); the
    callback writes the grid to `path` on rank 0 only.
    """

    step: int
    denoiser: Denoiser  # the EMA network
    sample: SampleConfig  # seeds, sampler, schedule, steps, guidance, prompts
    shape: tuple[int, int, int]  # what the network makes: [C, H, W] (latents with a codec)
    num_classes: int  # 0: no class labels
    null_label: int  # the reserved "no class" index
    text_encoder: TextEncoder | None
    codec: VAE | None  # decodes latents to images (on the CPU)
    device: torch.device
    is_main: bool
    path: Path  # out/samples/step-NNNNNNN.png


SampleFn = Callable[[SampleRequest], None]


@dataclass
class SampleDraws:
    """Per-sample random choices of one step (noise on the training device, the rest on the CPU)."""

    t: Tensor  # [b] float64 process times
    noise: Tensor  # [b, C, H, W] float32 ([b, C, T, H, W] for clips)
    flip: Tensor  # [b] bool
    drop_label: Tensor  # [b] bool
    keep_first: Tensor | None = None  # [b] bool: clip shown with its first frame (image-to-video)


def draw_per_sample(
    process: NoiseProcess,
    keys: Tensor,
    shape: tuple[int, ...],
    flip_p: float,
    drop_p: float,
    device: torch.device | str = "cpu",
) -> SampleDraws:
    """Draw each sample's time, noise, flip and label drop from its own key (`batch_keys`).

    A sample's draws depend only on its key, never on the batch it sits in or the device, which
    is what makes one-process and N-rank runs (and resumed runs) identical. The noise is made on
    `device`; the rest on the CPU.
    """
    keys = keys.cpu()
    u = stream_uniform(keys, 3)  # stream values 0-2: time, flip, label drop; noise from 3 on
    return SampleDraws(
        t=process.t_from_uniform(u[:, 0]),
        noise=stream_normal(keys.to(device), shape, offset=3),
        flip=u[:, 1] < flip_p,
        drop_label=u[:, 2] < drop_p,
    )


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    net_builder: Callable[..., tuple[nn.Module, Any]] | None = None,
    on_sample: SampleFn | None = None,
) -> TrainResult:
    """Train the recipe `cfg` into the run folder `out`.

    Run alone, or under torchrun (one process per device): the global batch
    `cfg.optim.batch_size` is split evenly across ranks, each rank running micro-batches of at
    most `cfg.optim.micro_batch` with gradient accumulation; rank 0 logs and checkpoints.

    Args:
        cfg: the recipe.
        out: run folder; refused if it holds another run, unless `resume`.
        resume: continue from the newest complete checkpoint in `out` (or start, if none).
        progress: show a progress bar (default: `cfg.log.progress`).
        net_builder: replaces `build_network` (same signature), e.g. for tests with a tiny
            network; the result must still be writable by `nets.io.save_network`.
        on_sample: draws a sample grid every `sample.every_steps` steps (None: no grids).
    Returns:
        a TrainResult; the final EMA model is in `out/model/` (for a [control] recipe, the
        EMA ControlNet as a `controlnet_folder`).
    Raises:
        FileExistsError, ConfigError, DataError: bad folder, recipe or data (nothing written).
        NonFiniteError: `optim.max_nonfinite` non-finite steps in a row.
        TrainingInterrupted: Ctrl-C; the newest checkpoint is intact, resume continues it.
    """
    out = Path(out)
    info = dist.setup(cfg.train.device)
    try:
        with interruptible(out):
            show = cfg.log.progress if progress is None else progress
            return _train(cfg, out, info, resume, show, net_builder or build_network, on_sample)
    finally:
        dist.cleanup(info)


def _train(
    cfg: TrainConfig,
    out: Path,
    info: dist.DistInfo,
    resume: bool,
    show_progress: bool,
    net_builder: Callable[..., tuple[nn.Module, Any]],
    on_sample: SampleFn | None,
) -> TrainResult:
    """`train` after the process group is set up."""
    set_threads(cfg, info)
    check_sample_settings(cfg)
    inputs = read_inputs(cfg, net_builder)  # a bad file or setting fails before any write
    has_run = open_run(out, cfg, resume, info)
    run = assemble(cfg, out, info, inputs)
    loop, steps = LoopState(), _Steps(run)
    if has_run and resume:
        found = load_resume_checkpoint(out, info)
        if found is not None:
            loop = steps.restore(found)
    try:
        loop = run_steps(
            cfg,
            out,
            loop,
            steps,
            steps.save,
            info=info,
            resumed=has_run,
            show_progress=show_progress,
            after_save=None if on_sample is None else functools.partial(_sample, run, on_sample),
        )
    finally:
        inputs.data.close()
    model_dir = _export(run)
    return TrainResult(out, loop.step, model_dir, steps.last_loss, steps.nonfinite_total)


def _micro_batches(n: int, micro: int) -> Iterator[slice]:
    size = micro if 0 < micro < n else n
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _precision_context(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast around the network (master weights stay fp32), chosen once."""
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Steps:
    """One optimizer step of diffusion training (a `run_loop.StepFn`) and its checkpoint.

    Holds the counters that live across steps: images seen, non-finite steps (in total and
    in a row) and the last finite loss.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.images_seen, self.nonfinite_total, self.streak = 0, 0, 0
        self.last_loss = float("nan")
        cfg = run.cfg
        self.precision = _precision_context(cfg, run.info.device)
        self.flip_p = 0.5 if cfg.data.flip else 0.0
        self.drop_p = cfg.model.label_dropout if run.inputs.num_classes else 0.0
        if run.captions is not None:
            self.drop_p = cfg.model.caption_dropout
        # Video networks that read a first frame (image-to-video).
        self.first_frame = bool(getattr(run.inputs.net_cfg, "first_frame", False))

    def __call__(self, step: int, lr: float, log: bool) -> StepReport:
        """Run 0-based step `step` at learning rate `lr` (fields are filled on every step)."""
        run, cfg, info = self.run, self.run.cfg, self.run.info
        o, data, order = cfg.optim, run.inputs.data, run.inputs.order
        # Dropout and other global-RNG users: a seed per (step, rank), so resumes repeat them.
        torch.manual_seed(mix_seeds(cfg.train.seed, step, info.rank, 0x6E7))
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        indices, first = order.shard(step, info.rank, info.world_size)
        keys = batch_keys(mix_seeds(cfg.train.seed, step), first, run.per_rank)
        draws = draw_per_sample(
            run.process, keys, run.image_shape, self.flip_p, self.drop_p, info.device
        )
        x0, labels, _ = data.batch(indices, draws.flip if self.flip_p else None)
        if data.frames:
            x0, draws = self._clip_inputs(step, first, x0, draws)
        if step + 1 < cfg.train.steps:
            data.prefetch(order.shard(step + 1, info.rank, info.world_size)[0])
        run.inputs.net.train()
        extra = None
        if run.inpaint is not None:  # the mask and masked image of each sample
            extra = run.inpaint.extra_inputs(indices, mix_seeds(cfg.train.seed, step), first, x0)
        loss_local = self._accumulate(indices, x0, labels, draws, extra)

        max_norm = o.grad_clip if o.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(run.inputs.net.parameters(), max_norm)
        loss_mean = dist.all_reduce_mean(loss_local, info)
        # One host sync per step: the non-finite guard needs the answer now.
        loss_value = float(loss_mean)
        norm_value = float(
            grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        )
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        self.images_seen += o.batch_size
        if finite:
            run.optimizer.step()
            run.ema.update(run.inputs.net, o.batch_size, self.images_seen)
            self.streak, self.last_loss = 0, loss_value
        else:
            self._nonfinite(step + 1, loss_value, norm_value)
        run.optimizer.zero_grad(set_to_none=True)
        fields = {
            "lr": lr,
            "grad_norm": norm_value,
            "images": self.images_seen,
            "nonfinite": self.nonfinite_total,
        }
        return StepReport(loss_value if finite else None, o.batch_size, fields)

    def _clip_inputs(
        self, step: int, first: int, x0: Tensor, draws: SampleDraws
    ) -> tuple[Tensor, SampleDraws]:
        """Clips: whether this step shows single frames (`data.image_fraction`; one frame
        index per step, so the batch keeps one shape) and, per clip, whether the network is
        given its first frame (`model.first_frame_dropout`). Drawn from (seed, step) and the
        sample's position alone, as every other draw."""
        cfg, run = self.run.cfg, self.run
        seed = cfg.train.seed
        if cfg.data.image_fraction:
            u = stream_uniform(batch_keys(mix_seeds(seed, step, 0x1A6E), 0, 1), 2)[0]
            if float(u[0]) < cfg.data.image_fraction:
                k = min(int(float(u[1]) * x0.shape[2]), x0.shape[2] - 1)
                x0 = x0[:, :, k : k + 1]
                noise = draws.noise[:, :, k : k + 1]
                keep = torch.zeros(x0.shape[0], dtype=torch.bool)
                return x0, dataclasses.replace(draws, noise=noise, keep_first=keep)
        if self.first_frame:
            keys = batch_keys(mix_seeds(seed, step, 0xF1F), first, run.per_rank)
            keep = stream_uniform(keys, 1)[:, 0] >= cfg.model.first_frame_dropout
            draws = dataclasses.replace(draws, keep_first=keep)
        return x0, draws

    def _accumulate(
        self, indices: list[int], x0: Tensor, labels: Tensor, draws: Any, extra: Tensor | None
    ) -> Tensor:
        """Forward and backward over the micro-batches; returns this rank's mean loss.

        `extra`: the EXTRA_INPUTS of the batch (an inpainting model), or None."""
        run, cfg, device = self.run, self.run.cfg, self.run.info.device
        loss_local = torch.zeros((), dtype=torch.float64, device=device)
        slices = list(_micro_batches(run.per_rank, cfg.optim.micro_batch))
        for i, sl in enumerate(slices):
            cond = None
            if run.inputs.num_classes:
                lab = torch.where(draws.drop_label[sl], run.null_label, labels[sl])
                cond = {"class_labels": lab.to(device)}
            if run.captions is not None:
                text = run.captions.batch(indices[sl], draws.drop_label[sl])
                cond = {**(cond or {}), **{k: v.to(device) for k, v in text.items()}}
            if run.controls is not None:
                cond = {**(cond or {}), "control": run.controls.batch(indices[sl]).to(device)}
            if extra is not None:
                cond = {**(cond or {}), EXTRA_INPUTS: extra[sl].to(device)}
            if self.first_frame and draws.keep_first is not None:
                first_frame = {
                    "first_frame": x0[sl, :, 0],
                    "first_frame_mask": draws.keep_first[sl],
                }
                cond = {**(cond or {}), **{k: v.to(device) for k, v in first_frame.items()}}
            with run.replica.no_sync(last=i == len(slices) - 1), self.precision:
                losses = denoising_loss(
                    run.denoiser,
                    x0[sl].to(device),
                    cond,
                    t=draws.t[sl],
                    noise=draws.noise[sl].to(device),
                    weighting=cfg.process.weighting,
                    min_snr_gamma=cfg.process.min_snr_gamma,
                )
                # Sum / per-rank batch: the accumulated gradient is that of the mean loss.
                loss = losses.float().sum() / run.per_rank
                loss.backward()
            loss_local += loss.detach().double()
        return loss_local

    def _nonfinite(self, at: int, loss_value: float, norm_value: float) -> None:
        """Count a skipped step; raise NonFiniteError after `optim.max_nonfinite` in a row."""
        self.nonfinite_total += 1
        self.streak += 1
        logger.warning(
            "step %d: non-finite loss %s / grad norm %s; step skipped (%d in a row)",
            at,
            loss_value,
            norm_value,
            self.streak,
        )
        if self.streak >= self.run.cfg.optim.max_nonfinite:
            done = latest_step(self.run.out)
            where = f"the last checkpoint is step {done}" if done else "no checkpoint yet"
            raise NonFiniteError(
                f"stopped at step {at}: {self.streak} non-finite steps in a row "
                f"({self.nonfinite_total} in total); {where}. Lower optim.lr, set "
                "optim.grad_clip, or check the data"
            )

    def save(self, at_step: int, loop_entries: dict[str, Any]) -> None:
        """Write the checkpoint of `at_step` (collective under FSDP; rank 0 writes)."""
        run, info = self.run, self.run.info
        model_state = run.replica.full_state(run.inputs.net)
        ema_state = run.replica.full_state(run.ema.module)
        opt_state = run.replica.optimizer_state(run.optimizer)
        if info.is_main:
            state = {
                **loop_entries,
                "images_seen": self.images_seen,
                "optimizer": opt_state,
                "rng": rng_state(info.device),
                "data": run.inputs.order.state_dict(at_step),
                "nonfinite_total": self.nonfinite_total,
                "nonfinite_streak": self.streak,
                "world_size": info.world_size,
            }
            ckpt.save_checkpoint(
                run.out,
                at_step,
                model=model_state,
                ema=ema_state,
                config=run.config_record,
                state=state,
                keep=run.cfg.checkpoint.keep,
            )
        dist.barrier(info)

    def restore(self, found: ckpt.Checkpoint) -> LoopState:
        """Load a checkpoint into the network, EMA, optimizer, RNG and counters.

        Returns:
            the loop state at that checkpoint.
        """
        run, state = self.run, found.state
        run.inputs.order.check_resumable(state["data"])
        run.replica.load_full_state(run.inputs.net, found.model)
        run.replica.load_full_state(run.ema.module, found.ema)
        run.replica.load_optimizer_state(run.optimizer, state["optimizer"])
        set_rng_state(state["rng"], run.info.device)
        self.images_seen = int(state["images_seen"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.streak = int(state["nonfinite_streak"])
        return LoopState.from_state(state)


def _sample(run: Run, on_sample: SampleFn, at_step: int) -> None:
    """Hand the EMA denoiser to the sample-grid callback (rank 0, or all ranks under FSDP)."""
    if not (run.replica.fsdp or run.info.is_main):
        return  # under FSDP every rank takes part in the sharded forward passes
    p = run.cfg.process
    ema_denoiser = Denoiser(run.ema.module, run.process, p.parametrization, sigma_data=p.sigma_data)
    on_sample(
        SampleRequest(
            step=at_step,
            denoiser=ema_denoiser,
            sample=run.cfg.sample,
            shape=run.image_shape,
            num_classes=run.inputs.num_classes,
            null_label=run.null_label,
            text_encoder=None if run.inputs.text is None else run.inputs.text[0],
            codec=run.inputs.codec,
            device=run.info.device,
            is_main=run.info.is_main,
            path=run.out / "samples" / f"step-{at_step:07d}.png",
        )
    )


def _export(run: Run) -> Path | None:
    """Write the EMA network to out/model on rank 0 (gathered first under FSDP)."""
    ema_state = run.replica.full_state(run.ema.module)  # collective under FSDP
    model_dir = None
    if run.info.is_main and run.controls is not None:  # a ControlNet run: the ControlNet alone
        model_dir = run.out / "model"
        save_controlnet(
            model_dir,
            run.ema.module.controlnet,
            run.cfg.train.init,
            dtype=getattr(torch, run.cfg.control.storage),
            recipe=run.config_record["recipe"],
        )
    elif run.info.is_main:
        model_dir = run.out / "model"
        plain = run.ema.module
        if run.replica.fsdp:  # a fresh unsharded copy to hold the gathered weights
            plain = run.inputs.build_net()[0]
            plain.load_state_dict(ema_state)
        data = run.inputs.data
        # With frozen parameters the folder stores only what differs from train.init.
        base = Path(run.cfg.train.init).expanduser() if run.cfg.train.frozen else None
        write_model(
            model_dir, plain, run.cfg, run.config_record, data.channels, data.image_size,
            run.inputs.codec, base,
        )  # fmt: skip
    dist.barrier(info=run.info)
    return model_dir
