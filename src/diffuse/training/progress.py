"""Training progress: a tqdm bar (loss, images/s, ETA) and the metrics.jsonl log."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from diffuse.training.checkpoint import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["MetricsLog", "Progress"]


class Progress:
    """A progress bar over optimiser steps; falls back to log lines when disabled or not a TTY.

    Args:
        total: the last step.
        initial: the step training starts (or resumes) from.
        enabled: show a bar at all (rank 0 only).
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.total = total
        self.step = initial
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                desc="train",
                file=sys.stderr,
            )
        self._start = time.perf_counter()
        self._start_step = initial

    def update(self, step: int, loss: float, images_per_s: float) -> None:
        """Advance to `step` and show the latest loss and throughput."""
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.1f}", refresh=False)
        else:
            elapsed = time.perf_counter() - self._start
            rate = (step - self._start_step) / max(elapsed, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            logger.info(
                "step %d/%d loss %.4f %.1f img/s eta %s",
                step,
                self.total,
                loss,
                images_per_s,
                _format_eta(eta),
            )
        self.step = step

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()


def _format_eta(seconds: float) -> str:
    if seconds == float("inf"):
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
