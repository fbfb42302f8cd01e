"""Save and load networks as data: `model.safetensors` (weights) and `config.json`
(`{"kind": "unet" | "dit", "config": {...}}`). No pickles; every write is atomic.

    save_network(net, "runs/x/model")
    net = load_network("runs/x/model")
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from diffuse.io import (
    MissingModelFileError,
    ModelFileError,
    atomic_path,
    atomic_write_text,
    load_safetensors,
)
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


def save_network(
    net: nn.Module, folder: str | os.PathLike, *, keys: Collection[str] | None = None
) -> Path:
    """Write a network's weights and config into `folder` (created if needed; other files in it
    are left alone).

    Args:
        net: a UNet or DiT (anything with a `config` of one of their config classes).
        folder: destination folder.
        keys: the state-dict names to write (None: all); the others must then come from a
            `base_state` when loading (a delta folder, `model_folder`).
    Returns:
        The folder path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = config_to_dict(net.config)
    # safetensors needs dense, unshared tensors; channels_last weights are stored contiguous.
    state = {
        k: v.detach().to("cpu").contiguous()
        for k, v in net.state_dict().items()
        if keys is None or k in keys
    }
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"kind": meta["kind"]})
    atomic_write_text(folder / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def load_network(
    folder: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    base_state: Mapping[str, Tensor] | None = None,
) -> UNet | DiT:
    """Rebuild a network written by `save_network`.

    Args:
        folder: folder holding config.json and model.safetensors.
        device: where to put the weights.
        base_state: the tensors of the names the weights file does not hold (the full weights
            of the base model of a delta folder); None: the file holds them all.
    Returns:
        The network in eval mode.
    Raises:
        MissingModelFileError: a file is missing (a FileNotFoundError too; with the path).
        ModelFileError: a damaged, truncated or incompatible config or weights file (a
            ValueError naming the file and what is wrong).
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise MissingModelFileError(f"no {path.name} in {folder}")
    try:
        config = config_from_dict(json.loads(cfg_path.read_text()))
    except (ValueError, TypeError, AttributeError) as err:  # bad JSON, fields or values
        raise ModelFileError(f"{cfg_path} is damaged: {err}") from None
    net = UNet(config) if isinstance(config, UNetConfig) else DiT(config)
    state = load_safetensors(w_path, device)
    with_base = ""
    if base_state is not None:
        names = net.state_dict().keys()
        state = {k: base_state[k] for k in names if k in base_state and k not in state} | state
        with_base = " with its base model's tensors"
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ModelFileError(f"{w_path}{with_base} does not match its config: {err}") from None
    if missing or unexpected:
        raise ModelFileError(
            f"{w_path}{with_base} does not match its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return net.to(device).eval()
