"""Checkpoints that are never seen half-written.

Layout of `RUN/checkpoints/step-N/`:

    model.safetensors   trained weights (fp32)
    ema.safetensors     EMA weights
    config.json         the recipe and the network config
    state.pt            optimizer, RNG, data order, counters (plain tensors and containers,
                        loaded with torch.load(weights_only=True))
    manifest.json       size and sha256 of each file above; written last

A checkpoint is written into a hidden temporary folder, every file fsync'ed, and the folder is
renamed to `step-N` in one atomic `os.rename`. A kill at any moment leaves either no `step-N`
or a complete one; leftovers of an interrupted write start with "." and are never loaded.
Old checkpoints are pruned the same way round: renamed out of sight first, then deleted.
Loading re-checks the manifest, so a damaged file is refused rather than half-loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import Tensor

from diffuse.io import file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "save_checkpoint",
]

FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or damaged."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    config: dict[str, Any]
    state: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _tensors_bytes(tensors: Mapping[str, Tensor]) -> bytes:

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return save(flat)


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Mapping[str, Tensor],
    ema: Mapping[str, Tensor],
    config: Mapping[str, Any],
    state: Mapping[str, Any],
    keep: int | None = None,
    _before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Write `RUN/checkpoints/step-N/` atomically and prune old ones.

    Args:
        run_dir: the run folder.
        step: optimiser steps taken.
        model, ema: state dicts of the network and its average.
        config: JSON-ready recipe and network config.
        state: optimizer state dict, RNG states, counters: tensors, numbers, strings and
            containers only, so that torch.load(weights_only=True) reads it.
        keep: keep only the newest `keep` checkpoints (None: all).
        _before_rename: test hook called with the temporary folder before the rename.
    Returns:
        the checkpoint folder.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    if final.exists():
        try:
            _verify(final)
            logger.info("checkpoint %s already exists; not rewritten", final)
            return final
        except CheckpointError:
            # A damaged folder with this name (not one of ours): move it out of the way.
            _discard(final)
    tmp = root / f".tmp-step-{step}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = {
            "model.safetensors": _tensors_bytes(model),
            "ema.safetensors": _tensors_bytes(ema),
            "config.json": (json.dumps(config, indent=2) + "\n").encode(),
            "state.pt": _torch_bytes(dict(state)),
        }
        manifest = {"format": FORMAT, "step": step, "files": {}}
        for name, data in files.items():
            _write_synced(tmp / name, data)
            manifest["files"][name] = {
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        _write_synced(tmp / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        if _before_rename is not None:
            _before_rename(tmp)
        os.rename(tmp, final)  # the commit point
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    return final


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every committed checkpoint, oldest first (not verified)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for _, path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _discard(path)


def _discard(path: Path) -> None:
    """Delete a checkpoint folder: first renamed out of sight (atomic), then removed, so a kill
    during the removal never leaves a half-deleted `step-N`."""
    hidden = path.with_name(f".del-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Delete leftovers of interrupted checkpoint writes; returns how many were removed."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return 0
    stale = [p for p in root.iterdir() if p.name.startswith((".tmp-", ".del-"))]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def _verify(path: Path, hashes: bool = True) -> dict[str, Any]:
    """Check the manifest's sizes (and sha256 hashes); return the manifest."""
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} has no valid manifest ({err})") from None
    for name, info in files.items():
        file = path / name
        try:
            size = file.stat().st_size
            digest = file_sha256(file) if hashes else None
        except OSError as err:
            raise CheckpointError(f"checkpoint {path}: cannot read {name} ({err})") from None
        if size != info["bytes"] or (hashes and digest != info["sha256"]):
            raise CheckpointError(f"checkpoint {path}: {name} is damaged (size or sha256)")
    return manifest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a checkpoint folder.

    Raises:
        CheckpointError: missing manifest, damaged or missing file.
    """
    from safetensors.torch import load_file

    path = Path(path)
    manifest = _verify(path)
    state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    return Checkpoint(
        path=path,
        step=int(manifest["step"]),
        model=load_file(str(path / "model.safetensors")),
        ema=load_file(str(path / "ema.safetensors")),
        config=json.loads((path / "config.json").read_text()),
        state=state,
    )


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint whose manifest and file sizes check out (hashes: on load)."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            _verify(path, hashes=False)
            return path
        except CheckpointError as err:
            logger.warning("skipping checkpoint step %d: %s", step, err)
    return None


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint | None:
    """Load the newest checkpoint that fully verifies, skipping damaged ones with a warning."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as err:
            logger.warning("skipping checkpoint step %d: %s", step, err)
    return None
