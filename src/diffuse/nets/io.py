"""Save and load networks as data: `model.safetensors` (weights) and `config.json`
(`{"kind": "unet" | "dit", "config": {...}}`). No pickles; every write is atomic.

    save_network(net, "runs/x/model")
    net = load_network("runs/x/model")
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from diffuse.nets.dit import DiT, DiTConfig
from diffuse.nets.unet import UNet, UNetConfig

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "config_from_dict",
    "config_to_dict",
    "load_network",
    "save_network",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = 1

# The two network kinds; an explicit table, never a lookup of classes by name.
_KINDS: dict[str, type[UNetConfig] | type[DiTConfig]] = {"unet": UNetConfig, "dit": DiTConfig}


def config_to_dict(config: UNetConfig | DiTConfig) -> dict:
    """The JSON form of a network config: {"format", "kind", "config"}."""
    if isinstance(config, UNetConfig):
        kind = "unet"
    elif isinstance(config, DiTConfig):
        kind = "dit"
    else:
        raise TypeError(f"expected a UNetConfig or DiTConfig, got {type(config).__name__}")
    return {"format": FORMAT, "kind": kind, "config": dataclasses.asdict(config)}


def config_from_dict(data: dict) -> UNetConfig | DiTConfig:
    """Inverse of `config_to_dict`.

    Raises:
        ValueError: unknown kind, unknown or invalid fields (named in the message).
    """
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"network kind must be one of {sorted(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    fields = dict(data.get("config", {}))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    return cls(**fields)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), then rename the temporary file over `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_network(net: nn.Module, folder: str | os.PathLike) -> Path:
    """Write a network's weights and config into `folder` (created if needed; other files in it
    are left alone).

    Args:
        net: a UNet or DiT (anything with a `config` of one of their config classes).
        folder: destination folder.
    Returns:
        The folder path.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = config_to_dict(net.config)
    # safetensors needs dense, unshared tensors; channels_last weights are stored contiguous.
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    _atomic_write(
        folder / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata={"kind": meta["kind"]})
    )
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(text))
    return folder


def load_network(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> UNet | DiT:
    """Rebuild a network written by `save_network`.

    Args:
        folder: folder holding config.json and model.safetensors.
        device: where to put the weights.
    Returns:
        The network in eval mode.
    Raises:
        FileNotFoundError: a file is missing (with the path).
        ValueError: a damaged or incompatible config or weights file.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {folder}")
    try:
        config = config_from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{cfg_path} is damaged: {err}") from None
    net = UNet(config) if isinstance(config, UNetConfig) else DiT(config)
    state = load_file(str(w_path), device=str(device))
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{w_path} does not match its config: {err}") from None
    if missing or unexpected:
        raise ValueError(
            f"{w_path} does not match its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return net.to(device).eval()
