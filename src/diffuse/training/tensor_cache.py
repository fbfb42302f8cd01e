"""Tensors computed once for a run (caption encodings, image latents) and kept beside it.

A cache file is a safetensors file whose metadata holds a key: a hash of everything the
tensors were computed from. It is read back only when the key matches, and written atomically
(`diffuse.io.atomic_write_bytes`), so a partial or stale file is never used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import safe_open
from torch import Tensor

from diffuse.io import atomic_write_bytes

__all__ = ["load_cached", "save_cached"]

logger = logging.getLogger(__name__)


def load_cached(
    path: Path, key: str, required: Sequence[str], what: str
) -> dict[str, Tensor] | None:
    """The tensors cached at `path` if the file exists, was written for `key` and holds every
    `required` name; None otherwise (an unreadable file is reported as `what` and ignored)."""

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        missing = [name for name in required if name not in tensors]
        if missing:
            raise KeyError(missing)
        return tensors
    except (SafetensorError, OSError, KeyError, ValueError):
        logger.warning("ignoring unreadable %s %s", what, path)
        return None


def save_cached(path: Path, key: str, tensors: Mapping[str, Tensor]) -> None:
    """Write `tensors` to `path` under `key`, atomically."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(dict(tensors), metadata={"key": key}))
