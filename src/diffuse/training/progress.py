"""Training progress: a tqdm bar (loss, images/s, ETA) and the metrics.jsonl log."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from diffuse.io import atomic_write_text, bar_size_options

logger = logging.getLogger(__name__)

__all__ = ["MetricsLog", "Progress", "eta_seconds", "format_eta"]


def eta_seconds(steps_left: int, steps_per_s: float, budget_left_s: float | None = None) -> float:
    """Seconds until training ends: the sooner of the remaining steps and the time budget.

    Args:
        steps_left: optimizer steps still to run.
        steps_per_s: the measured rate (0 or less: not known yet).
        budget_left_s: seconds left of train.max_minutes (None: no budget).
    Returns:
        the estimate in seconds (inf when neither bound is known).
    """
    by_steps = steps_left / steps_per_s if steps_per_s > 0 else math.inf
    if budget_left_s is None:
        return by_steps
    return max(0.0, min(by_steps, budget_left_s))


class Progress:
    """A progress bar over optimiser steps; falls back to log lines when disabled or not a TTY.

    While the bar is shown, log records of the root logger's console handlers go through
    `tqdm.write`, which clears the bar, prints the line and redraws the bar below it. The ETA
    is `eta_seconds`: it honours the time budget as well as the step count.

    Args:
        total: the last step.
        initial: the step training starts (or resumes) from.
        enabled: show a bar at all (rank 0 only).
        budget_s: seconds left of the time budget at `initial` (None: no budget).
    """

    def __init__(
        self, total: int, initial: int = 0, enabled: bool = True, budget_s: float | None = None
    ) -> None:
        self.total = total
        self.step = initial
        self.budget_s = budget_s
        self.bar: tqdm | None = None
        self._stack = contextlib.ExitStack()
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                **bar_size_options(sys.stderr),
                desc="train",
                file=sys.stderr,
                # tqdm's own remaining time knows nothing of the budget: ours is in the postfix.
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )
            self._stack.enter_context(logging_redirect_tqdm())
        self._start = time.perf_counter()
        self._start_step = initial

    def eta(self, step: int) -> float:
        """Seconds left after `step`, from the rate since this bar started.

        Args:
            step: the step just done.
        Returns:
            `eta_seconds` of the remaining steps and budget.
        """
        elapsed = time.perf_counter() - self._start
        rate = (step - self._start_step) / max(elapsed, 1e-9)
        budget = None if self.budget_s is None else self.budget_s - elapsed
        return eta_seconds(self.total - step, rate, budget)

    def update(self, step: int, loss: float, images_per_s: float) -> None:
        """Advance to `step` and show the latest loss, throughput and ETA.

        Args:
            step: the step just done.
            loss: the loss to show.
            images_per_s: training throughput.
        """
        eta = format_eta(self.eta(step))
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix(
                loss=f"{loss:.4f}", img_s=f"{images_per_s:.1f}", eta=eta, refresh=False
            )
        else:
            logger.info(
                "step %d/%d loss %.4f %.1f img/s eta %s",
                step,
                self.total,
                loss,
                images_per_s,
                eta,
            )
        self.step = step

    def close(self) -> None:
        """Finish the bar and give log records back to their handlers."""
        if self.bar is not None:
            self.bar.close()
        self._stack.close()


def format_eta(seconds: float) -> str:
    """'H:MM:SS' of `seconds`, or '?' when unknown (inf).

    Args:
        seconds: a duration.
    Returns:
        the formatted duration.
    """
    if seconds == math.inf:
        return "?"
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class MetricsLog:
    """Append-only JSON lines, one per logging interval: {"step": ..., "loss": ..., ...}.

    On resume the lines written after the checkpoint's step (by the interrupted run) are
    dropped first, so the file reads as one uninterrupted run.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and _step_of(line) <= resume_step
            ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to disk."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line from a kill: drop it
