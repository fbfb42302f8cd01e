"""The folder of a trained text model (masked diffusion or its autoregressive baseline).

It has the files of an image model folder (`diffuse.model_folder`): `model.safetensors`,
`config.json` (the `TextTransformer`'s config) and `diffusion.json`, marked `"kind": "text"`
and recording the vocabulary, objective, masking schedule and sampling defaults. The image
loaders refuse such a folder and `load_text_model` refuses image folders, each naming the
command that reads the folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from diffuse.io import (
    MissingModelFileError,
    ModelFileError,
    atomic_folder,
    atomic_write_text,
    load_safetensors,
)
from diffuse.model_folder import (
    FORMAT,
    IMAGE_KIND,
    INFO_FILE,
    TEXT_KIND,
    TEXT_NETWORK_KIND,
    resolve_model_folder,
)
from diffuse.nets.io import CONFIG_FILE, WEIGHTS_FILE
from diffuse.text.masking import MaskSchedule
from diffuse.text.transformer import TextNetConfig, TextTransformer
from diffuse.text.vocab import CharVocab

__all__ = ["TextModel", "TextModelInfo", "load_text_model", "save_text_model"]

# --------------------------------------------------------------------------------------------
# Text models (masked diffusion and its autoregressive baseline)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextModelInfo:
    """What diffusion.json records about a text model (`"kind": "text"`).

    Args:
        objective: "mdlm" (masked diffusion, bidirectional) or "ar" (autoregressive, causal).
        chars: the character vocabulary, in id order.
        network: the `TextTransformer`'s config.
        schedule: the masking schedule alpha(t) ("linear" or "cosine").
        sampler: the default sampler of `diffuse text generate` (diffusion models).
        steps: the default number of sampling steps (diffusion models).
        recipe: the training recipe, as JSON (None if unknown).
        validation: the last validation score recorded at training time (JSON), if any.
    """

    objective: str
    chars: tuple[str, ...]
    network: TextNetConfig
    schedule: str = "linear"
    sampler: str = "confidence"
    steps: int = 64
    recipe: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.objective not in ("mdlm", "ar"):
            raise ValueError(f"text objective must be 'mdlm' or 'ar', got {self.objective!r}")
        if self.network.causal != (self.objective == "ar"):
            raise ValueError(
                f"objective {self.objective!r} does not match a network with causal = "
                f"{self.network.causal}"
            )
        if len(self.chars) != self.network.vocab_size:
            raise ValueError(
                f"{len(self.chars)} characters but the network reads {self.network.vocab_size}"
            )
        MaskSchedule(self.schedule)  # names the valid ones if unknown
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampling steps must be an integer >= 1, got {self.steps!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to diffusion.json."""
        return {
            "format": FORMAT,
            "kind": TEXT_KIND,
            "objective": self.objective,
            "vocabulary": "".join(self.chars),
            "schedule": self.schedule,
            "sampling": {"sampler": self.sampler, "steps": self.steps},
            "recipe": self.recipe,
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], network: TextNetConfig) -> TextModelInfo:
        """Inverse of `to_dict`, given the network config (from config.json).

        Raises:
            ValueError: not a text model, an unknown version or a bad value.
        """
        kind = data.get("kind", IMAGE_KIND)
        if kind != TEXT_KIND:
            raise ValueError(
                f"this is an {kind} model, not a text model; use `diffuse generate` or "
                "`diffuse sample` (Python: diffuse.model_folder.load_model)"
            )
        version = data.get("format")
        if version != FORMAT:
            raise ValueError(f"unknown text model format version {version!r} (reads {FORMAT})")
        sampling = data.get("sampling") or {}
        return cls(
            objective=str(data["objective"]),
            chars=tuple(str(data["vocabulary"])),
            network=network,
            schedule=str(data.get("schedule", "linear")),
            sampler=str(sampling.get("sampler", "confidence")),
            steps=int(sampling.get("steps", 64)),
            recipe=data.get("recipe"),
            validation=data.get("validation"),
        )


@dataclass
class TextModel:
    """A loaded text model: the network (frozen, eval mode), its vocabulary and schedule."""

    net: TextTransformer
    info: TextModelInfo
    folder: Path

    @property
    def vocab(self) -> CharVocab:
        """The character vocabulary (ids 0..V-1; V is the mask / begin token)."""
        return CharVocab(self.info.chars)

    @property
    def schedule(self) -> MaskSchedule:
        """The masking schedule alpha(t) the model was trained with."""
        return MaskSchedule(self.info.schedule)  # type: ignore[arg-type]

    @property
    def is_diffusion(self) -> bool:
        """True for a masked diffusion model, False for the autoregressive baseline."""
        return self.info.objective == "mdlm"


def save_text_model(
    folder: str | os.PathLike,
    net: TextTransformer,
    info: TextModelInfo,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a text model folder (config.json, model.safetensors, diffusion.json), replacing
    any old one in a single rename, as `save_model` does.

    Args:
        folder: destination.
        net: the network (the trainer passes its EMA copy).
        info: what to record.
        dtype: the stored weight type (float16 halves a shipped model; loading gives float32).
    Returns:
        The folder path.
    """
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"kind": TEXT_NETWORK_KIND})
        network = {
            "format": 1,
            "kind": TEXT_NETWORK_KIND,
            "config": dataclasses.asdict(net.config),
        }
        atomic_write_text(tmp / CONFIG_FILE, json.dumps(network, indent=2) + "\n")
        atomic_write_text(tmp / INFO_FILE, json.dumps(info.to_dict(), indent=2) + "\n")
    return folder


def load_text_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> TextModel:
    """Load a text model folder (or the `model/` folder of a text training run).

    Args:
        folder: the model or run folder.
        device: where the network goes (weights in float32 whatever was stored).
    Returns:
        The model, frozen, in eval mode.
    Raises:
        MissingModelFileError: no model there, or a file missing.
        ModelFileError: an image model's folder, a damaged file or weights that do not match
            the config (naming the file).
    """
    folder = resolve_model_folder(folder)
    info_path, cfg_path = folder / INFO_FILE, folder / CONFIG_FILE
    try:
        data = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{info_path} is damaged: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{info_path} is damaged: expected a JSON object")
    if data.get("kind", IMAGE_KIND) != TEXT_KIND:
        raise ModelFileError(
            f"{folder} holds an image model, not a text model; use `diffuse generate` or "
            "`diffuse sample` for it, and give `diffuse text` a text model folder"
        )
    for path in (cfg_path, folder / WEIGHTS_FILE):
        if not path.is_file():
            raise MissingModelFileError(f"no {path.name} in {folder}")
    try:
        network = json.loads(cfg_path.read_text())
        if network.get("kind") != TEXT_NETWORK_KIND:
            raise ValueError(f"network kind {network.get('kind')!r} is not {TEXT_NETWORK_KIND!r}")
        net_cfg = TextNetConfig(**network["config"])
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ModelFileError(f"{cfg_path} is damaged: {err}") from None
    try:
        info = TextModelInfo.from_dict(data, net_cfg)
    except KeyError as err:
        raise ModelFileError(f"{info_path} is damaged: missing key {err}") from None
    except (ValueError, TypeError) as err:
        raise ModelFileError(f"{info_path}: {err}") from None
    net = TextTransformer(net_cfg)
    state = load_safetensors(folder / WEIGHTS_FILE, "cpu")
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise ModelFileError(f"{folder / WEIGHTS_FILE} does not match its config: {err}") from None
    return TextModel(net.to(device).eval().requires_grad_(False), info, folder)
