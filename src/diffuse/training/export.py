"""Export of a trained diffusion model: the EMA network and its `ModelInfo` in RUN/model.

The trainer's side of the saved-model folder; `diffuse.model_folder` owns the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from diffuse.config import TrainConfig
from diffuse.model_folder import ModelInfo, save_model

__all__ = ["write_model"]


def write_model(
    model_dir: Path,
    module: nn.Module,
    cfg: TrainConfig,
    config_record: dict[str, Any],
    channels: int,
    image_size: int,
    codec: Any = None,
    base: str | Path | None = None,
) -> Path:
    """Write a complete model folder, swapped into place so `model_dir` is never half-written.

    Args:
        model_dir: the folder to (re)place, e.g. RUN/model.
        module: the network to save (the EMA average).
        cfg: the recipe (process, text encoder and sampling defaults are recorded).
        config_record: the run's record: "class_names" and maybe "base_model" (provenance).
        channels: channels of what the network makes (latent channels of a latent model).
        image_size: side of what the network makes.
        codec: the VAE of a latent model (its folder is copied into the model), or None.
        base: the model folder fine-tuning started from, to write a delta folder storing only
            what differs from it (`model_folder.save_model`); None: a full folder.
    Returns:
        model_dir.
    """
    info = ModelInfo.from_recipe(
        cfg,
        class_names=config_record["class_names"],
        channels=channels,
        image_size=image_size,
        base_model=config_record.get("base_model"),
    )
    source = codec.source if codec is not None else None
    return save_model(model_dir, module, info, source, base=base)
