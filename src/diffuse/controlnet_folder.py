"""The saved ControlNet format: `controlnet.safetensors` and `controlnet.json` (its
`ControlNetConfig`, the sha256 of the base weights it was built for and, when trained by
`diffuse train`, its recipe). Training writes it; pipelines read it.

    save_controlnet("models/shapes-controlnet-edges", net, base_folder)
    net = load_controlnet("models/shapes-controlnet-edges", base_folder)

Loading it next to another base is an error naming both hashes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from diffuse.io import atomic_folder, file_sha256, load_safetensors
from diffuse.model_folder import WEIGHTS_FILE
from diffuse.nets.controlnet import ControlNet, ControlNetConfig

__all__ = ["CONFIG", "WEIGHTS", "is_controlnet_folder", "load_controlnet", "save_controlnet"]

CONFIG = "controlnet.json"
WEIGHTS = "controlnet.safetensors"


def is_controlnet_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a ControlNet."""
    return (Path(folder) / CONFIG).is_file()


def save_controlnet(
    folder: str | os.PathLike,
    net: ControlNet,
    base_folder: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Write a ControlNet folder (swapped in whole) recording the base model it steers.

    Args:
        folder: the folder to (re)place.
        net: the ControlNet.
        base_folder: the base model's folder (its weights' sha256 is recorded).
        dtype: storage dtype of the weights (float16 halves the file).
        recipe: the training recipe, recorded as is (None: none).
    Returns:
        the folder.
    """
    base_sha = file_sha256(Path(base_folder) / WEIGHTS_FILE)
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in net.state_dict().items()}
    record: dict[str, Any] = {
        "format": 1,
        "config": net.config.to_dict(),
        "base_weights_sha256": base_sha,
    }
    if recipe is not None:
        record["recipe"] = recipe
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    return Path(folder)


def load_controlnet(folder: str | os.PathLike, base_folder: str | os.PathLike) -> ControlNet:
    """Load a ControlNet (float32, frozen) and check it was built for the base in `base_folder`.

    Raises:
        FileNotFoundError: no ControlNet there.
        ValueError: built for another base model (both hashes named), or a damaged file.
    """
    folder = Path(folder)
    if not is_controlnet_folder(folder):
        raise FileNotFoundError(f"{folder} holds no ControlNet ({CONFIG} missing)")
    try:
        record = json.loads((folder / CONFIG).read_text())
        config = ControlNetConfig.from_dict(record["config"])
        wanted = str(record["base_weights_sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder / CONFIG} is damaged ({err})") from None
    have = file_sha256(Path(base_folder) / WEIGHTS_FILE)
    if wanted != have:
        raise ValueError(
            f"{folder} is a ControlNet for another base model (weights sha256 {wanted[:12]}), "
            f"not for {base_folder} ({have[:12]})"
        )
    net = ControlNet(config)
    state = {k: v.float() for k, v in load_safetensors(folder / WEIGHTS).items()}
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)
