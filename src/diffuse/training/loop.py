"""The training loop: one explicit function, `train`.

    data -> process.add_noise -> denoiser -> weighted loss -> AdamW -> EMA -> checkpoint

Determinism: everything random in step k is drawn from seeds that depend only on
(seed, k, global position in the batch), and the data order only on (seed, k). So a run resumed
from a checkpoint repeats the uninterrupted run's losses exactly, and N ranks splitting a
global batch see the same samples, noise and times as one process running the whole batch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffuse.config import (
    RESUMABLE_CHANGES,
    ConfigError,
    TrainConfig,
    config_diff,
    from_dict,
    to_dict,
)
from diffuse.denoiser import Denoiser
from diffuse.losses import denoising_loss
from diffuse.model_folder import INFO_FILE as MODEL_INFO
from diffuse.processes import NoiseProcess
from diffuse.training import checkpoint as ckpt
from diffuse.training import dist
from diffuse.training.counter_rng import batch_keys, mix_seeds, stream_normal, stream_uniform
from diffuse.training.data import BatchOrder, TrainData, build_dataset
from diffuse.training.ema import EMA
from diffuse.training.model import build_network, build_process, count_parameters, param_groups
from diffuse.training.progress import MetricsLog, Progress

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "TrainResult", "lr_at", "prepare_run_dir", "train"]

RUN_FILE = "run.json"


class NonFiniteError(RuntimeError):
    """Training stopped after too many non-finite steps in a row."""


@dataclass
class TrainResult:
    """What `train` leaves behind."""

    run_dir: Path
    step: int
    model_dir: Path | None
    last_loss: float
    nonfinite_steps: int


# --------------------------------------------------------------------------------------------
# Schedules and per-sample randomness
# --------------------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) step `step`: linear warm-up, then constant or cosine.

    Cosine: lr_min + (lr - lr_min) (1 + cos(pi p)) / 2 with p the fraction of post-warm-up steps
    done (Loshchilov & Hutter 2017, without restarts).
    """
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    span = max(1, cfg.train.steps - o.warmup_steps)
    p = min(1.0, (step - o.warmup_steps) / span)
    floor = o.lr * o.min_lr_ratio
    return floor + (o.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class SampleDraws:
    """Per-sample random choices of one step (noise on the training device, the rest on the CPU)."""

    t: Tensor  # [b] float64 process times
    noise: Tensor  # [b, C, H, W] float32
    flip: Tensor  # [b] bool
    drop_label: Tensor  # [b] bool


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


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def prepare_run_dir(out: Path, cfg: TrainConfig, resume: bool) -> bool:
    """Check that `out` may hold this run, and create it. Returns True if it holds one already.

    A folder that holds another run is refused unless `resume` is set; on resume, only the
    keys that do not change the trajectory (`RESUMABLE_CHANGES`) may differ from the recipe the
    run started with. A non-empty folder that holds no run is always refused. Nothing is
    written before these checks pass.
    """
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            record = json.loads(run_file.read_text())
            old = from_dict(type(cfg), record["config"])
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{run_file} is damaged or from another version ({err})") from None
        if not resume:
            steps = [s for s, _ in ckpt.list_checkpoints(out)]
            last = f", last checkpoint at step {steps[-1]}" if steps else ""
            raise FileExistsError(
                f"{out} already holds a training run (run {record.get('run_id', '?')}{last}); "
                "pass --resume to continue it or choose a new --out folder"
            )
        changed = {
            k: v
            for k, v in config_diff(old, cfg).items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUMABLE_CHANGES)
        }
        if changed:
            lines = "; ".join(
                f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in changed.items())
            )
            raise ConfigError(
                f"cannot resume {out}: the recipe differs from the run's in {lines} "
                "(only train.steps, train.threads, checkpoint.*, log.* and sample.* may change; "
                "use a new --out for a different run)"
            )
        if config_diff(old, cfg):
            record["config"] = to_dict(cfg)
            ckpt.atomic_write_text(run_file, json.dumps(record, indent=2) + "\n")
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} is not empty and holds no diffuse run; choose a new or empty --out folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "format": 1,
        "run_id": uuid.uuid4().hex,
        "created": time.time(),
        "config": to_dict(cfg),
    }
    ckpt.atomic_write_text(run_file, json.dumps(record, indent=2) + "\n")
    return False


# --------------------------------------------------------------------------------------------
# Helpers of the loop
# --------------------------------------------------------------------------------------------


def _precision_context(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast around the network (master weights stay fp32), chosen once."""
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _micro_batches(n: int, micro: int) -> Iterator[slice]:
    size = micro if 0 < micro < n else n
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _use_fsdp(cfg: TrainConfig, info: dist.DistInfo, net: nn.Module) -> bool:
    """FSDP when asked, or in "auto" when weights + grads + Adam moments (16 bytes per
    parameter) would take more than half of one device."""
    if not info.distributed or cfg.train.strategy == "ddp":
        return False
    if cfg.train.strategy == "fsdp":
        return True
    if info.device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(info.device).total_memory
    return 16 * count_parameters(net) > total / 2


class _Replica:
    """The trained network as the loop sees it: plain, DDP- or FSDP-wrapped, maybe compiled.

    Gives full (unsharded) state dicts on rank 0 and loads full state dicts on every rank, so
    checkpoints do not depend on how the network was distributed.
    """

    def __init__(self, net: nn.Module, cfg: TrainConfig, info: dist.DistInfo) -> None:
        self.net = net  # the master fp32 module (parameters shared with the wrappers)
        self.info = info
        self.fsdp = _use_fsdp(cfg, info, net)
        self.ddp: nn.Module | None = None
        wrapped: nn.Module = net
        if self.fsdp:
            self.shard(net)
        elif info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [info.device.index] if info.device.type == "cuda" else None
            self.ddp = wrapped = DistributedDataParallel(net, device_ids=ids)
        if cfg.train.compile:
            wrapped = torch.compile(wrapped)
        self.forward_module = wrapped

    @staticmethod
    def shard(module: nn.Module) -> None:
        """FSDP2: shard every top-level block (each entry of a ModuleList), then the root."""
        from torch.distributed.fsdp import fully_shard

        for child in module.children():
            blocks = list(child) if isinstance(child, (nn.ModuleList, nn.Sequential)) else [child]
            for block in blocks:
                if isinstance(block, nn.Module) and any(True for _ in block.parameters()):
                    fully_shard(block)
        fully_shard(module)

    def no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch."""
        if self.ddp is not None and not last:
            return self.ddp.no_sync()
        if self.fsdp and not last:
            self.net.set_requires_gradient_sync(False)
        elif self.fsdp:
            self.net.set_requires_gradient_sync(True)
        return contextlib.nullcontext()

    def full_state(self, module: nn.Module) -> dict[str, Tensor]:
        """Full state dict of `module` (collective under FSDP), on the CPU."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(module, options=opts)
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}

    def load_full_state(self, module: nn.Module, state: dict[str, Tensor]) -> None:
        """Load a full state dict into `module` (sharding it under FSDP)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
        else:
            module.load_state_dict(state)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Full optimizer state dict, keyed by parameter names (collective under FSDP)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.net, optimizer, options=opts)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load a state from `optimizer_state` (on every rank)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            self.net, optimizer, state, options=StateDictOptions(full_state_dict=True)
        )


def _save_grid(images: Tensor, path: Path, nrow: int) -> None:
    from diffuse.pipelines.sample import save_grid

    save_grid(images, path, nrow=nrow)


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    net_builder: Callable[..., tuple[nn.Module, Any]] | None = None,
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
    Returns:
        a TrainResult; the final EMA model is in `out/model/`.
    Raises:
        FileExistsError, ConfigError, DataError: bad folder, recipe or data (nothing written).
        NonFiniteError: `optim.max_nonfinite` non-finite steps in a row.
    """
    out = Path(out)
    info = dist.setup(cfg.train.device)
    try:
        show = cfg.log.progress if progress is None else progress
        return _train(cfg, out, info, resume, show, net_builder or build_network)
    finally:
        dist.cleanup(info)


def _collective_check(info: dist.DistInfo, fn: Any) -> Any:
    """Run `fn` on rank 0 and share its result or its error with every rank."""
    result: Any = None
    error: BaseException | None = None
    if info.is_main:
        try:
            result = fn()
        except Exception as err:  # shared below, re-raised on every rank
            error = err
    result, error_text = dist.broadcast_object(
        (result, None if error is None else f"{type(error).__name__}: {error}"), info
    )
    if error is not None:
        raise error
    if error_text is not None:
        raise RuntimeError(f"rank 0 failed: {error_text}")
    return result


def _train(
    cfg: TrainConfig,
    out: Path,
    info: dist.DistInfo,
    resume: bool,
    show_progress: bool,
    net_builder: Callable[..., tuple[nn.Module, Any]],
) -> TrainResult:
    o = cfg.optim
    world = info.world_size
    if o.batch_size % world:
        raise ConfigError(
            f"optim.batch_size = {o.batch_size} must be divisible by the {world} processes"
        )
    per_rank = o.batch_size // world
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif info.distributed and info.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    if cfg.sample.every_steps:  # a typo here should not surface only at the first grid
        from diffuse.samplers.registry import get_sampler, get_schedule

        for key, lookup, name in (
            ("sample.sampler", get_sampler, cfg.sample.sampler),
            ("sample.schedule", get_schedule, cfg.sample.schedule),
        ):
            try:
                lookup(name)
            except ValueError as err:
                raise ConfigError(f"{key}: {err}") from None

    # Data first: a missing or corrupt file fails before anything is written.
    data = TrainData(build_dataset(cfg.data, seed=cfg.train.seed), cfg.data)
    order = BatchOrder(len(data), o.batch_size, cfg.train.seed, data.dataset.fingerprint())
    loaded_text_encoder = _text_encoder(cfg, data) if cfg.model.text_encoder else None
    codec = _codec(cfg) if cfg.data.codec else None
    # The network next (cheap, and a bad [model] or train.init fails before anything is
    # written), shaped for what training will feed it: latents when there is a codec.
    num_classes = data.num_classes if cfg.model.class_conditional else 0
    channels, size = data.channels, data.image_size
    if codec is not None:
        channels, size, _ = codec.latent_shape(data.image_size)
    text_dims = {}
    if loaded_text_encoder is not None:
        encoder = loaded_text_encoder[0]
        text_dims = {"context_dim": encoder.dim, "pooled_dim": encoder.pooled_dim}
    build_net = functools.partial(
        net_builder,
        cfg.model,
        in_channels=channels,
        image_size=size,
        num_classes=num_classes,
        **text_dims,
    )
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    net, net_cfg = build_net()
    if cfg.train.init:  # fine-tuning: the EMA below starts from these weights too
        _load_init_weights(cfg.train.init, net, net_cfg)
    has_run = _collective_check(info, lambda: prepare_run_dir(out, cfg, resume))
    if info.is_main and has_run:
        removed = ckpt.remove_stale_temporaries(out)
        if removed:
            logger.info("removed %d interrupted checkpoint write(s)", removed)

    if codec is not None:  # latent diffusion: every image encoded once, cached in the run
        data.encode_latents(codec.to(info.device), out if info.is_main else None)
        codec.cpu()  # sample grids decode on the CPU
    text_encoder, captions = None, None
    if cfg.model.text_encoder:
        from diffuse.training.captions import CaptionBank

        text_encoder, texts = loaded_text_encoder
        text_encoder.to(info.device)  # encoding every caption is its heavy use
        captions = CaptionBank(text_encoder, texts, cache_dir=out if info.is_main else None)
    net.to(info.device)
    process = build_process(cfg.process)
    ema = EMA(net, cfg.ema.halflife_images, cfg.ema.rampup)
    replica = _Replica(net, cfg, info)
    if replica.fsdp:  # the average is sharded like the network, so its update stays local
        replica.shard(ema.module)
    fused = info.device.type == "cuda" and not replica.fsdp
    optimizer = torch.optim.AdamW(
        param_groups(net, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps, fused=fused or None
    )
    denoiser = Denoiser(
        replica.forward_module,
        process,
        cfg.process.parametrization,
        sigma_data=cfg.process.sigma_data,
    )
    config_record = {
        "format": 1,
        "recipe": to_dict(cfg),
        "network": to_dict(net_cfg),
        "class_names": data.class_names if num_classes else [],
    }
    if cfg.train.init:
        config_record["base_model"] = base_model_record(Path(cfg.train.init).expanduser())
    logger.info(
        "network %s: %.2fM parameters; %d images; %d ranks x %d images/step",
        cfg.model.preset,
        count_parameters(net) / 1e6,
        len(data),
        world,
        per_rank,
    )

    # Resume.
    step, images_seen, nonfinite_total, streak, elapsed = 0, 0, 0, 0, 0.0
    log_sum, log_count = 0.0, 0
    if has_run and resume:
        found = ckpt.load_latest(out) if info.is_main else None
        path = dist.broadcast_object(None if found is None else str(found.path), info)
        if path is not None:
            loaded = found if info.is_main else ckpt.load_checkpoint(path)
            state = loaded.state
            order.check_resumable(state["data"])
            replica.load_full_state(net, loaded.model)
            replica.load_full_state(ema.module, loaded.ema)
            replica.load_optimizer_state(optimizer, state["optimizer"])
            _set_rng_state(state["rng"], info.device)
            step, images_seen = int(state["step"]), int(state["images_seen"])
            nonfinite_total, streak = int(state["nonfinite_total"]), int(state["nonfinite_streak"])
            log_sum, log_count = float(state["log_sum"]), int(state["log_count"])
            elapsed = float(state["elapsed_s"])
            logger.info("resumed from %s (step %d)", path, step)
        else:
            logger.info("no complete checkpoint in %s; starting from step 0", out)

    metrics = (
        MetricsLog(out / "metrics.jsonl", resume_step=step if has_run else None)
        if info.is_main
        else None
    )
    bar = Progress(cfg.train.steps, step, enabled=show_progress and info.is_main)
    precision = _precision_context(cfg, info.device)
    image_shape = (data.channels, data.image_size, data.image_size)
    null_label = num_classes  # the network's reserved "no class" index
    flip_p = 0.5 if cfg.data.flip else 0.0
    drop_p = cfg.model.label_dropout if num_classes else 0.0
    if captions is not None:
        drop_p = cfg.model.caption_dropout

    def save(at_step: int) -> None:
        model_state = replica.full_state(net)
        ema_state = replica.full_state(ema.module)
        opt_state = replica.optimizer_state(optimizer)
        if info.is_main:
            state = {
                "step": at_step,
                "images_seen": images_seen,
                "optimizer": opt_state,
                "rng": _rng_state(info.device),
                "data": order.state_dict(at_step),
                "nonfinite_total": nonfinite_total,
                "nonfinite_streak": streak,
                "log_sum": log_sum,
                "log_count": log_count,
                "elapsed_s": elapsed + (time.perf_counter() - t_start),
                "world_size": world,
            }
            ckpt.save_checkpoint(
                out,
                at_step,
                model=model_state,
                ema=ema_state,
                config=config_record,
                state=state,
                keep=cfg.checkpoint.keep,
            )
        dist.barrier(info)

    def sample_grid(at_step: int) -> None:
        from diffuse.pipelines.sample import generate

        s = cfg.sample
        labels = [i % num_classes for i in range(len(s.seeds))] if num_classes else None
        ema_denoiser = Denoiser(
            ema.module, process, cfg.process.parametrization, sigma_data=cfg.process.sigma_data
        )
        if not (replica.fsdp or info.is_main):
            return  # under FSDP every rank takes part in the sharded forward passes
        text_cond, text_uncond = None, None
        if text_encoder is not None:
            prompts = [s.prompts[i % len(s.prompts)] if s.prompts else "" for i in s.seeds]
            text_cond = {
                k: v.to(info.device) for k, v in text_encoder.encode(prompts).as_cond().items()
            }
            empty = text_encoder.encode([""]).as_cond()
            text_uncond = {k: v.to(info.device) for k, v in empty.items()}
        images = generate(
            ema_denoiser,
            image_shape,
            list(s.seeds),
            labels=labels,
            null_label=null_label,
            cond=text_cond,
            uncond=text_uncond,
            sampler=s.sampler,
            schedule=s.schedule,
            steps=s.steps,
            guidance=s.guidance,
            device=info.device,
        )
        if codec is not None:
            images = codec.decode(images.cpu())
        if info.is_main:
            nrow = (
                num_classes
                if num_classes and len(s.seeds) % num_classes == 0
                else math.ceil(math.sqrt(len(s.seeds)))
            )
            _save_grid(images, out / "samples" / f"step-{at_step:07d}.png", nrow)

    t_start = time.perf_counter()
    t_log, images_log = time.perf_counter(), 0
    final_step = cfg.train.steps

    def out_of_time(at_step: int) -> bool:
        """True once the time budget is spent (rank 0 decides, at logging steps only)."""
        if not cfg.train.max_minutes or at_step % cfg.log.every_steps:
            return False
        spent = elapsed + time.perf_counter() - t_start
        return bool(dist.broadcast_object(spent >= 60.0 * cfg.train.max_minutes, info))

    last_loss = float("nan")
    try:
        while step < cfg.train.steps:
            # Dropout and other global-RNG users: a seed per (step, rank), so resumes repeat them.
            torch.manual_seed(mix_seeds(cfg.train.seed, step, info.rank, 0x6E7))
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            indices, first = order.shard(step, info.rank, world)
            keys = batch_keys(mix_seeds(cfg.train.seed, step), first, per_rank)
            draws = draw_per_sample(process, keys, image_shape, flip_p, drop_p, info.device)
            x0, labels, _ = data.batch(indices, draws.flip if flip_p else None)
            if step + 1 < cfg.train.steps:
                data.prefetch(order.shard(step + 1, info.rank, world)[0])
            net.train()

            loss_local = torch.zeros((), dtype=torch.float64, device=info.device)
            slices = list(_micro_batches(per_rank, o.micro_batch))
            for i, sl in enumerate(slices):
                cond = None
                if num_classes:
                    lab = torch.where(draws.drop_label[sl], null_label, labels[sl])
                    cond = {"class_labels": lab.to(info.device)}
                if captions is not None:
                    text = captions.batch(indices[sl], draws.drop_label[sl])
                    cond = {**(cond or {}), **{k: v.to(info.device) for k, v in text.items()}}
                with replica.no_sync(last=i == len(slices) - 1), precision:
                    losses = denoising_loss(
                        denoiser,
                        x0[sl].to(info.device),
                        cond,
                        t=draws.t[sl],
                        noise=draws.noise[sl].to(info.device),
                        weighting=cfg.process.weighting,
                        min_snr_gamma=cfg.process.min_snr_gamma,
                    )
                    # Sum / per-rank batch: the accumulated gradient is that of the mean loss.
                    loss = losses.float().sum() / per_rank
                    loss.backward()
                loss_local += loss.detach().double()

            max_norm = o.grad_clip if o.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
            loss_mean = dist.all_reduce_mean(loss_local, info)
            # One host sync per step: the non-finite guard needs the answer now.
            loss_value = float(loss_mean)
            norm_value = float(
                grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            )
            finite = math.isfinite(loss_value) and math.isfinite(norm_value)
            images_seen += o.batch_size
            if finite:
                optimizer.step()
                ema.update(net, o.batch_size, images_seen)
                streak = 0
                log_sum += loss_value
                log_count += 1
                last_loss = loss_value
            else:
                nonfinite_total += 1
                streak += 1
                logger.warning(
                    "step %d: non-finite loss %s / grad norm %s; step skipped (%d in a row)",
                    step + 1,
                    loss_value,
                    norm_value,
                    streak,
                )
            optimizer.zero_grad(set_to_none=True)
            step += 1
            images_log += o.batch_size
            if streak >= o.max_nonfinite:
                done = [s for s, _ in ckpt.list_checkpoints(out)]
                where = f"the last checkpoint is step {done[-1]}" if done else "no checkpoint yet"
                raise NonFiniteError(
                    f"stopped at step {step}: {streak} non-finite steps in a row "
                    f"({nonfinite_total} in total); {where}. Lower optim.lr, set optim.grad_clip, "
                    "or check the data"
                )

            if step % cfg.log.every_steps == 0 or step == final_step:
                now = time.perf_counter()
                ips = images_log / max(now - t_log, 1e-9)
                mean = log_sum / log_count if log_count else float("nan")
                if metrics is not None:
                    metrics.write(
                        {
                            "step": step,
                            "loss": mean,
                            "lr": lr,
                            "grad_norm": norm_value,
                            "images": images_seen,
                            "images_per_s": round(ips, 2),
                            "nonfinite": nonfinite_total,
                            "time_s": round(elapsed + now - t_start, 3),
                        }
                    )
                bar.update(step, mean, ips)
                log_sum, log_count = 0.0, 0
                t_log, images_log = now, 0
            if out_of_time(step):
                logger.info("train.max_minutes reached at step %d; finishing", step)
                final_step = step
            last = step == final_step
            t_aside = time.perf_counter()
            if step % cfg.checkpoint.every_steps == 0 or last:
                save(step)
            if cfg.sample.every_steps and (step % cfg.sample.every_steps == 0 or last):
                sample_grid(step)
            if last:
                break
            t_log += time.perf_counter() - t_aside  # images/s counts training time only
    finally:
        bar.close()
        data.close()
        if metrics is not None:
            metrics.close()

    model_dir = None
    ema_state = replica.full_state(ema.module)  # collective under FSDP
    if info.is_main:
        model_dir = out / "model"
        plain = ema.module
        if replica.fsdp:  # a fresh unsharded copy to hold the gathered weights
            plain = build_net()[0]
            plain.load_state_dict(ema_state)
        _write_model(model_dir, plain, cfg, config_record, data, codec)
    dist.barrier(info)
    return TrainResult(out, step, model_dir, last_loss, nonfinite_total)


def _text_encoder(cfg: TrainConfig, data: TrainData) -> tuple[Any, list[str | None]]:
    """The frozen text encoder of `model.text_encoder` and the data's captions (checked before
    the run folder is touched)."""
    from diffuse.codecs.text_encoder import TextEncoder

    name = cfg.model.text_encoder
    try:
        encoder = TextEncoder(None if name == "default" else name)
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise ConfigError(f"model.text_encoder = {name!r}: {err}") from None
    texts = data.captions()
    if not any(texts):
        raise ConfigError(
            f"model.text_encoder is set but the data ({cfg.data.source}) has no captions"
        )
    return encoder, texts


def _load_init_weights(init: str, net: nn.Module, net_cfg: Any) -> None:
    """Load the weights of the trained model folder `init` into `net`, whose config `net_cfg`
    its network must equal exactly (ConfigError naming each differing field otherwise)."""
    from diffuse.nets.io import config_to_dict, load_network

    try:
        trained = load_network(Path(init).expanduser())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"train.init = {init!r}: {err}") from None
    have, want = config_to_dict(trained.config), config_to_dict(net_cfg)
    if have != want:
        lines = config_differences(have["config"], want["config"])
        raise ConfigError(
            f"train.init = {init!r}: its network differs from the recipe's "
            f"({lines or have['kind'] + ' there, ' + want['kind'] + ' here'})"
        )
    net.load_state_dict(trained.state_dict())
    logger.info("initial weights from %s", init)


def config_differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """'key: value there, value here' for each field of `want` that `have` holds otherwise."""
    return "; ".join(
        f"{k}: {have.get(k)!r} there, {v!r} here" for k, v in want.items() if have.get(k) != v
    )


def base_model_record(folder: Path) -> dict[str, Any]:
    """Provenance of a fine-tuned model: the folder it started from, the sha256 of its weights,
    its recipe and, in turn, its own base model (so the whole chain of recipes stays on record
    even after the base folder is overwritten)."""
    from diffuse.nets.io import WEIGHTS_FILE

    record: dict[str, Any] = {"path": str(folder)}
    record["weights_sha256"] = ckpt.file_sha256(folder / WEIGHTS_FILE)
    info_path = folder / MODEL_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        record["recipe"] = info.get("recipe")
        if "base_model" in info:
            record["base_model"] = info["base_model"]
    return record


def _codec(cfg: TrainConfig) -> Any:
    """The VAE of `data.codec` (checked before the run folder is touched)."""
    from diffuse.codecs.vae import load_vae

    try:
        codec = load_vae(Path(cfg.data.codec).expanduser())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.codec = {cfg.data.codec!r}: {err}") from None
    if cfg.data.image_size % codec.downsample:
        raise ConfigError(
            f"data.codec: image size {cfg.data.image_size} is not divisible by the codec's "
            f"factor {codec.downsample}"
        )
    return codec


def _write_model(
    model_dir: Path,
    module: nn.Module,
    cfg: TrainConfig,
    config_record: dict,
    data: TrainData,
    codec: Any = None,
) -> None:
    """Write the EMA network (`nets.io.save_network`) and the diffusion metadata (with a copy
    of the codec in model/vae for a latent model), then swap the folder into place, so
    `model_dir` is always a complete model."""
    import shutil

    from diffuse.nets.io import save_network

    tmp = model_dir.with_name(f".{model_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    save_network(module, tmp)
    meta = {
        "format": 1,
        "process": {"kind": cfg.process.kind, "options": to_dict(cfg.process.options)},
        "parametrization": cfg.process.parametrization,
        "sigma_data": cfg.process.sigma_data,
        "class_names": config_record["class_names"],
        "null_label": len(config_record["class_names"]),
        "channels": data.channels,
        "image_size": data.image_size,
        "text_encoder": cfg.model.text_encoder,
        "codec": "vae" if codec is not None else "",
        "sample": to_dict(cfg.sample),
        "recipe": config_record["recipe"],
    }
    if "base_model" in config_record:
        meta["base_model"] = config_record["base_model"]
    if codec is not None:
        shutil.copytree(codec.source, tmp / "vae")
    ckpt.atomic_write_text(tmp / MODEL_INFO, json.dumps(meta, indent=2) + "\n")
    old = model_dir.with_name(f".{model_dir.name}.old-{uuid.uuid4().hex[:8]}")
    if model_dir.exists():
        os.rename(model_dir, old)
    os.rename(tmp, model_dir)
    shutil.rmtree(old, ignore_errors=True)
