"""The run folder: `run.json` (the run's id and resolved recipe), created or checked once.

A run folder holds one training run. Starting a run writes its resolved recipe (the recipe file
with every `--set` applied) to `run.json`; resuming reads it back, so a plain resume continues
with the settings the run started with, and only the keys in `RESUMABLE_CHANGES` may change.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from diffuse.config import (
    RESUMABLE_CHANGES,
    ConfigError,
    TrainConfig,
    VAETrainConfig,
    apply_overrides,
    config_diff,
    from_dict,
    recipe_class,
    to_dict,
)
from diffuse.io import atomic_write_text
from diffuse.training import checkpoint as ckpt
from diffuse.training import dist

logger = logging.getLogger(__name__)

__all__ = [
    "RUN_FILE",
    "collective_check",
    "open_run",
    "prepare_run_dir",
    "resumable",
    "resumable_keys",
    "run_recipe",
]

RUN_FILE = "run.json"

T = TypeVar("T")


def resumable(key: str) -> bool:
    """True if the dotted recipe key `key` may change when a run is resumed."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUMABLE_CHANGES)


def resumable_keys() -> str:
    """The keys a resumed run may change, as the error messages show them ('log.*', ...)."""
    return ", ".join(p + "*" if p.endswith(".") else p for p in RESUMABLE_CHANGES)


def _read_record(run_file: Path, cls: type) -> tuple[dict[str, Any], Any]:
    """The run record of `run_file` and its recipe as a `cls`; ConfigError if damaged."""
    try:
        record = json.loads(run_file.read_text())
        return record, from_dict(cls, record["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{run_file} is damaged or from another version ({err})") from None


def run_recipe(out: str | Path, overrides: Sequence[str] = ()) -> TrainConfig | VAETrainConfig:
    """The resolved recipe a run in `out` started with, with `overrides` applied on top.

    This is what `--resume` continues with: the recipe file's current contents do not matter,
    the run's own settings (including the `--set` overrides it was started with) do. Overrides
    may only change keys that a resume may change (repeating the run's own values is fine).

    Args:
        out: a run folder holding `run.json`.
        overrides: 'section.key=value' strings given on resume.
    Returns:
        the recipe (a VAETrainConfig for an autoencoder run, else a TrainConfig).
    Raises:
        FileNotFoundError: `out` holds no run.
        ConfigError: `run.json` is damaged, or an override may not change on resume.
    """
    run_file = Path(out) / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{out} holds no training run ({RUN_FILE} is missing)")
    try:
        tables = json.loads(run_file.read_text())["config"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{run_file} is damaged or from another version ({err})") from None
    cls = recipe_class(tables)
    cfg = from_dict(cls, apply_overrides(tables, overrides, cls))
    changed = {
        k: v for k, v in config_diff(from_dict(cls, tables), cfg).items() if not resumable(k)
    }
    if changed:
        lines = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"cannot resume {out} with {lines}: only {resumable_keys()} may change on resume; "
            "use a new --out for a different run"
        )
    return cfg


def prepare_run_dir(out: Path, cfg: Any, resume: bool) -> bool:
    """Check that `out` may hold this run, and create it. Returns True if it holds one already.

    A folder that holds another run is refused unless `resume` is set; on resume, only the
    keys that do not change the trajectory (`RESUMABLE_CHANGES`) may differ from the recipe the
    run started with, and the allowed changes are stored in `run.json` and logged. A non-empty
    folder that holds no run is always refused. Nothing is written before these checks pass.

    Args:
        out: the run folder.
        cfg: the recipe (TrainConfig or VAETrainConfig).
        resume: continue a run already in `out`.
    Returns:
        True if `out` already held a run.
    Raises:
        FileExistsError: `out` holds another run (without `resume`) or unrelated files.
        ConfigError: `run.json` is damaged, or the recipe differs in a key that cannot change.
    """
    run_file = out / RUN_FILE
    if run_file.is_file():
        record, old = _read_record(run_file, type(cfg))
        if not resume:
            steps = [s for s, _ in ckpt.list_checkpoints(out)]
            last = f", last checkpoint at step {steps[-1]}" if steps else ""
            raise FileExistsError(
                f"{out} already holds a training run (run {record.get('run_id', '?')}{last}); "
                "pass --resume to continue it or choose a new --out folder"
            )
        diff = config_diff(old, cfg)
        changed = {k: v for k, v in diff.items() if not resumable(k)}
        if changed:
            lines = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(
                f"cannot resume {out}: the recipe differs from the run's in {lines} "
                f"(only {resumable_keys()} may change; use a new --out for a different run)"
            )
        if diff:
            for key, (a, b) in diff.items():
                logger.info("resumed with %s = %r (was %r)", key, b, a)
            record["config"] = to_dict(cfg)
            atomic_write_text(run_file, json.dumps(record, indent=2) + "\n")
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
    atomic_write_text(run_file, json.dumps(record, indent=2) + "\n")
    return False


def collective_check(info: dist.DistInfo, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 and share its result or its error with every rank.

    Args:
        info: this process's place in the process group.
        fn: the check (run on rank 0 only).
    Returns:
        rank 0's result, on every rank; rank 0's error is raised on every rank.
    """
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


def open_run(out: Path, cfg: Any, resume: bool, info: dist.DistInfo) -> bool:
    """`prepare_run_dir` on rank 0 (shared with every rank), then clear interrupted writes.

    Args:
        out: the run folder.
        cfg: the recipe.
        resume: continue a run already in `out`.
        info: this process's place in the process group.
    Returns:
        True if `out` already held a run.
    """
    has_run = collective_check(info, lambda: prepare_run_dir(out, cfg, resume))
    if info.is_main and has_run:
        removed = ckpt.remove_stale_temporaries(out)
        if removed:
            logger.info("removed %d interrupted checkpoint write(s)", removed)
    return has_run
