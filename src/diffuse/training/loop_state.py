"""The loop's own state in a checkpoint: step, time spent, the open logging interval, RNGs.

Both trainers store `LoopState.state_dict()` inside their checkpoint's state and read it back
with `LoopState.from_state`, so resume bookkeeping is written once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffuse.training import checkpoint as ckpt
from diffuse.training import dist

logger = logging.getLogger(__name__)

__all__ = ["LoopState", "latest_step", "load_resume_checkpoint", "rng_state", "set_rng_state"]


@dataclass
class LoopState:
    """Where the step loop stands.

    Attributes:
        step: optimizer steps done.
        elapsed_s: training seconds spent before this process started (for train.max_minutes).
        log_sum: sum of the finite losses of the open logging interval.
        log_count: how many losses `log_sum` holds.
    """

    step: int = 0
    elapsed_s: float = 0.0
    log_sum: float = 0.0
    log_count: int = 0

    def state_dict(self, elapsed_s: float) -> dict[str, Any]:
        """The entries a checkpoint's state stores, with `elapsed_s` the time spent so far.

        Args:
            elapsed_s: seconds spent up to now (this state's plus this process's).
        Returns:
            {"step", "log_sum", "log_count", "elapsed_s"}.
        """
        return {
            "step": self.step,
            "log_sum": self.log_sum,
            "log_count": self.log_count,
            "elapsed_s": elapsed_s,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LoopState:
        """Read back `state_dict()` (also an autoencoder checkpoint's older "elapsed" key).

        Args:
            state: a checkpoint's state.
        Returns:
            the loop state at that checkpoint.
        """
        return cls(
            step=int(state["step"]),
            elapsed_s=float(state.get("elapsed_s", state.get("elapsed", 0.0))),
            log_sum=float(state.get("log_sum", 0.0)),
            log_count=int(state.get("log_count", 0)),
        )


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global torch RNG state (and the CUDA one on a CUDA device).

    Args:
        device: the training device.
    Returns:
        {"torch": ..., "cuda": ...} for `set_rng_state`.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` returned.

    Args:
        state: a saved RNG state.
        device: the training device.
    """
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_resume_checkpoint(
    out: Path, info: dist.DistInfo, map_location: str | torch.device = "cpu"
) -> ckpt.Checkpoint | None:
    """The newest complete checkpoint of the run in `out`, on every rank (rank 0 finds it).

    Args:
        out: the run folder.
        info: this process's place in the process group.
        map_location: where tensors are loaded.
    Returns:
        the checkpoint, or None (logged) if the run has none yet.
    """
    found = ckpt.load_latest(out, map_location=map_location) if info.is_main else None
    path = dist.broadcast_object(None if found is None else str(found.path), info)
    if path is None:
        logger.info("no complete checkpoint in %s; starting from step 0", out)
        return None
    loaded = found if info.is_main else ckpt.load_checkpoint(path, map_location=map_location)
    logger.info("resumed from %s (step %d)", path, loaded.step)
    return loaded


def latest_step(out: Path) -> int | None:
    """The step of the newest committed checkpoint in `out`, or None if there is none.

    Args:
        out: the run folder.
    Returns:
        the step, or None.
    """
    steps = [s for s, _ in ckpt.list_checkpoints(out)]
    return steps[-1] if steps else None
