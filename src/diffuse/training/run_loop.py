"""The step loop both trainers share: learning-rate schedule, logging and progress, the time
budget, checkpoint cadence, sample-grid cadence and Ctrl-C.

A trainer supplies what one optimizer step is (`StepFn`) and how its checkpoint is written
(`SaveFn`); `run_steps` decides when to log, save, sample and stop:

    for each step: lr_at -> step_fn -> [log: metrics.jsonl + bar] -> [budget spent? last step]
                   -> [save_fn] -> [after_save: sample grid] -> stop after the last step
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffuse.config import TrainConfig, VAETrainConfig
from diffuse.training import dist
from diffuse.training.loop_state import LoopState, latest_step
from diffuse.training.progress import MetricsLog, Progress

logger = logging.getLogger(__name__)

__all__ = [
    "NonFiniteError",
    "StepReport",
    "TrainingInterrupted",
    "interruptible",
    "lr_at",
    "run_steps",
]


class NonFiniteError(RuntimeError):
    """Training stopped after too many non-finite steps in a row."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the newest checkpoint is complete and `--resume` continues it.

    Attributes:
        step: the last optimizer step done.
        checkpoint_step: the step of the newest complete checkpoint (None: there is none).
        out: the run folder.
    """

    def __init__(self, step: int, checkpoint_step: int | None, out: Path) -> None:
        super().__init__(f"interrupted at step {step} (last checkpoint: {checkpoint_step})")
        self.step = step
        self.checkpoint_step = checkpoint_step
        self.out = out


def lr_at(step: int, cfg: TrainConfig | VAETrainConfig) -> float:
    """Learning rate of (0-based) step `step`: linear warm-up, then constant or cosine.

    Cosine: lr_min + (lr - lr_min) (1 + cos(pi p)) / 2 with p the fraction of post-warm-up steps
    done (Loshchilov & Hutter 2017, without restarts).

    Args:
        step: the step about to run.
        cfg: the recipe (optim.* and train.steps).
    Returns:
        the learning rate.
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
class StepReport:
    """What one optimizer step tells the loop.

    Attributes:
        loss: the step's loss, or None for a skipped (non-finite) step, left out of the mean.
        images: images the step trained on (all ranks).
        fields: extra metrics.jsonl fields, read on logging steps only.
    """

    loss: float | None
    images: int
    fields: dict[str, Any] = field(default_factory=dict)


# step_fn(step, lr, log): run 0-based step `step` at learning rate `lr`; `log` says that the
# loop logs after it (so the step fills StepReport.fields).
StepFn = Callable[[int, float, bool], StepReport]
# save_fn(step, loop_entries): write the checkpoint of `step` with the loop's entries in its state.
SaveFn = Callable[[int, dict[str, Any]], None]
# after_save(step): called after the checkpoint cadence on sample-grid steps.
AfterSaveFn = Callable[[int], None]


class _Clock:
    """Training time (this process's plus what the run spent before) and the budget."""

    def __init__(self, elapsed_s: float, max_minutes: float, info: dist.DistInfo) -> None:
        self.before = elapsed_s
        self.start = time.perf_counter()
        self.budget_s = 60.0 * max_minutes if max_minutes else None
        self.info = info

    def spent(self) -> float:
        return self.before + time.perf_counter() - self.start

    def budget_left(self) -> float | None:
        return None if self.budget_s is None else self.budget_s - self.spent()

    def out_of_time(self) -> bool:
        """True once the budget is spent (rank 0 decides; every rank gets its answer)."""
        if self.budget_s is None:
            return False
        return bool(dist.broadcast_object(self.spent() >= self.budget_s, self.info))


@contextlib.contextmanager
def interruptible(out: Path) -> Iterator[None]:
    """Turn a Ctrl-C (KeyboardInterrupt) raised inside into `TrainingInterrupted`.

    Args:
        out: the run folder (its newest checkpoint is reported).
    """
    try:
        yield
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        done = latest_step(out) if out.is_dir() else None
        raise TrainingInterrupted(done or 0, done, out) from None


def run_steps(
    cfg: TrainConfig | VAETrainConfig,
    out: Path,
    loop: LoopState,
    step_fn: StepFn,
    save_fn: SaveFn,
    *,
    info: dist.DistInfo,
    resumed: bool,
    show_progress: bool,
    after_save: AfterSaveFn | None = None,
) -> LoopState:
    """Run steps from `loop.step` until `train.steps` or the time budget, whichever is first.

    Logs every `log.every_steps` steps (rank 0: a metrics.jsonl line, the bar), checkpoints
    every `checkpoint.every_steps` steps and at the end, calls `after_save` every
    `sample.every_steps` steps (diffusion recipes) and at the end.

    Args:
        cfg: the recipe.
        out: the run folder.
        loop: where the run stands (a resumed run's state from its checkpoint); updated in place.
        step_fn: one optimizer step.
        save_fn: writes a checkpoint (on every rank: it may be collective).
        info: this process's place in the process group.
        resumed: the run folder held this run (metrics.jsonl is trimmed, not restarted).
        show_progress: show a bar (rank 0, on a terminal).
        after_save: the sample-grid hook, or None.
    Returns:
        `loop` at the last step.
    Raises:
        TrainingInterrupted: on Ctrl-C (no checkpoint is written; the newest one is intact).
    """
    clock = _Clock(loop.elapsed_s, cfg.train.max_minutes, info)
    metrics = (
        MetricsLog(out / "metrics.jsonl", loop.step if resumed else None) if info.is_main else None
    )
    bar = Progress(cfg.train.steps, loop.step, show_progress and info.is_main, clock.budget_left())
    sample_every = getattr(getattr(cfg, "sample", None), "every_steps", 0)
    final_step = cfg.train.steps
    t_log, images_log = time.perf_counter(), 0
    try:
        while loop.step < cfg.train.steps:
            at = loop.step + 1
            logs = at % cfg.log.every_steps == 0 or at == final_step
            report = step_fn(loop.step, lr_at(loop.step, cfg), logs)
            loop.step, images_log = at, images_log + report.images
            if report.loss is not None:
                loop.log_sum += report.loss
                loop.log_count += 1
            if logs:
                now = time.perf_counter()
                ips = images_log / max(now - t_log, 1e-9)
                mean = loop.log_sum / loop.log_count if loop.log_count else float("nan")
                record = {"step": at, "loss": mean, **report.fields}
                record.update(images_per_s=round(ips, 2), time_s=round(clock.spent(), 3))
                if metrics is not None:
                    metrics.write(record)
                bar.update(at, mean, ips)
                loop.log_sum, loop.log_count = 0.0, 0
                t_log, images_log = now, 0
                if clock.out_of_time():
                    logger.info("train.max_minutes reached at step %d; finishing", at)
                    final_step = at
            last, t_aside = at == final_step, time.perf_counter()
            if at % cfg.checkpoint.every_steps == 0 or last:
                save_fn(at, loop.state_dict(clock.spent()))
            if after_save is not None and sample_every and (at % sample_every == 0 or last):
                after_save(at)
            if last:
                break
            t_log += time.perf_counter() - t_aside  # images/s counts training time only
    except KeyboardInterrupt:
        raise TrainingInterrupted(loop.step, latest_step(out), out) from None
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    loop.elapsed_s = clock.spent()
    return loop
