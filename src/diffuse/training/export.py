"""Export of a trained diffusion model: the EMA network plus `diffusion.json` in RUN/model.

The one place the trainer writes the saved-model folder that `pipelines` read back.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from diffuse.config import TrainConfig, to_dict
from diffuse.model_folder import INFO_FILE, WEIGHTS_FILE
from diffuse.nets.io import save_network
from diffuse.training.checkpoint import atomic_write_text, file_sha256

__all__ = ["base_model_record", "write_model"]


def base_model_record(folder: Path) -> dict[str, Any]:
    """Provenance of a fine-tuned model.

    Args:
        folder: the model folder a run started from (`train.init`).
    Returns:
        its path, the sha256 of its weights, its recipe and, in turn, its own base model (so
        the whole chain of recipes stays on record even after the base folder is overwritten).
    """
    record: dict[str, Any] = {"path": str(folder)}
    record["weights_sha256"] = file_sha256(folder / WEIGHTS_FILE)
    info_path = folder / INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        record["recipe"] = info.get("recipe")
        if "base_model" in info:
            record["base_model"] = info["base_model"]
    return record


def write_model(
    model_dir: Path,
    module: nn.Module,
    cfg: TrainConfig,
    config_record: dict[str, Any],
    channels: int,
    image_size: int,
    codec: Any = None,
) -> None:
    """Write a complete model folder, swapped into place so `model_dir` is never half-written.

    Args:
        model_dir: the folder to (re)place, e.g. RUN/model.
        module: the network to save (the EMA average), through `nets.io.save_network`.
        cfg: the recipe (process, text encoder and sampling defaults are recorded).
        config_record: the run's record: "class_names", "recipe" and maybe "base_model".
        channels: image channels of the data.
        image_size: image side in pixels.
        codec: the VAE of a latent model (copied to model_dir/vae), or None.
    """
    tmp = model_dir.with_name(f".{model_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    save_network(module, tmp)
    meta = {
        "format": 1,
        "process": {"kind": cfg.process.kind, "options": to_dict(cfg.process.options)},
        "parametrization": cfg.process.parametrization,
        "sigma_data": cfg.process.sigma_data,
        "class_names": config_record["class_names"],
        "null_label": len(config_record["class_names"]),
        "channels": channels,
        "image_size": image_size,
        "text_encoder": cfg.model.text_encoder,
        "codec": "vae" if codec is not None else "",
        "sample": to_dict(cfg.sample),
        "recipe": config_record["recipe"],
    }
    if "base_model" in config_record:
        meta["base_model"] = config_record["base_model"]
    if codec is not None:
        shutil.copytree(codec.source, tmp / "vae")
    atomic_write_text(tmp / INFO_FILE, json.dumps(meta, indent=2) + "\n")
    old = model_dir.with_name(f".{model_dir.name}.old-{uuid.uuid4().hex[:8]}")
    if model_dir.exists():
        os.rename(model_dir, old)
    os.rename(tmp, model_dir)
    shutil.rmtree(old, ignore_errors=True)
