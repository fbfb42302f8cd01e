"""The diffusers folder layout: which components a folder holds, their configs and weights.

A pipeline folder has `model_index.json` naming each component's class and subfolder; a
component folder has a `config.json` whose `_class_name` names its class. Weights are read from
safetensors files only: a `.bin`, `.ckpt`, `.pt` or `.pth` file is a pickle, and loading a pickle
runs code from the file, so such a folder is refused with that reason (convert it to safetensors
with the tool that made it first).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from diffuse.io import MissingModelFileError, ModelFileError, load_safetensors

__all__ = [
    "PIPELINE_INDEX",
    "SUPPORTED_CLASSES",
    "Component",
    "UnsupportedModelError",
    "class_labels",
    "find_components",
    "is_diffusers_folder",
    "read_config",
    "read_weights",
    "weights_digest",
]

PIPELINE_INDEX = "model_index.json"
COMPONENT_CONFIG = "config.json"

# What each supported diffusers class becomes; the one list every message quotes.
SUPPORTED_CLASSES: dict[str, str] = {
    "UNet2DModel": "denoiser network (diffuse U-Net)",
    "UNet2DConditionModel": "denoiser network (diffuse U-Net with spatial transformers)",
    "DiTTransformer2DModel": "denoiser network (diffuse DiT)",
    "Transformer2DModel": "denoiser network (diffuse DiT: PixArt-style or class-conditional)",
    "PixArtTransformer2DModel": "denoiser network (diffuse DiT, PixArt layout)",
    "AutoencoderKL": "latent codec",
    "CLIPTextModel": "text encoder",
    "T5EncoderModel": "text encoder",
    "CLIPTokenizer": "tokenizer",
    "CLIPTokenizerFast": "tokenizer",
    "T5Tokenizer": "tokenizer",
    "T5TokenizerFast": "tokenizer",
    "DDIMScheduler": "noise process and schedule",
    "DDPMScheduler": "noise process and schedule",
    "PNDMScheduler": "noise process and schedule",
    "EulerDiscreteScheduler": "noise process and schedule",
    "EulerAncestralDiscreteScheduler": "noise process and schedule",
    "DPMSolverMultistepScheduler": "noise process and schedule",
    "LMSDiscreteScheduler": "noise process and schedule",
    "UniPCMultistepScheduler": "noise process and schedule",
    "HeunDiscreteScheduler": "noise process and schedule",
}
# Pipeline components a diffuse model has no use for (None in model_index.json is skipped too).
IGNORED_COMPONENTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


class UnsupportedModelError(ModelFileError):
    """A diffusers folder this importer cannot map faithfully (the reason in the message)."""


@dataclass(frozen=True)
class Component:
    """One component of a diffusers folder.

    Attributes:
        name: its role ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "transformer";
            the class's own role for a single component folder).
        class_name: the diffusers or transformers class.
        folder: where its files are.
    """

    name: str
    class_name: str
    folder: Path


def is_diffusers_folder(folder: str | os.PathLike) -> bool:
    """True if `folder` looks like a diffusers pipeline or component folder (not a diffuse
    model folder, which has diffusion.json)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / "diffusion.json").is_file():
        return False
    if (folder / PIPELINE_INDEX).is_file():
        return True
    config = folder / COMPONENT_CONFIG
    if not config.is_file():
        return False
    try:
        return "_class_name" in json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingModelFileError(f"{path}: file missing")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path} is damaged: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} is damaged: expected a JSON object")
    return data


def _unsupported(class_name: str, where: Path) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{where}: unsupported diffusers class {class_name!r}; supported: "
        f"{', '.join(SUPPORTED_CLASSES)}"
    )


def find_components(folder: str | os.PathLike) -> list[Component]:
    """The components of a pipeline folder (from model_index.json) or of a component folder.

    Args:
        folder: a diffusers pipeline folder or a single component's folder.
    Returns:
        The supported components it holds.
    Raises:
        MissingModelFileError: no model_index.json or config.json, or a component's subfolder
            is missing.
        UnsupportedModelError: a component of a class this importer does not map (named, with
            the supported list).
    """
    folder = Path(folder)
    if (folder / PIPELINE_INDEX).is_file():
        index = _read_json(folder / PIPELINE_INDEX)
        components = []
        for name, spec in index.items():
            if name.startswith("_") or name in IGNORED_COMPONENTS:
                continue
            if not isinstance(spec, list) or len(spec) != 2 or spec[1] is None:
                continue  # an absent optional component is written as [null, null]
            class_name = str(spec[1])
            if class_name not in SUPPORTED_CLASSES:
                raise _unsupported(class_name, folder / PIPELINE_INDEX)
            sub = folder / name
            if not sub.is_dir():
                raise MissingModelFileError(
                    f"{folder / PIPELINE_INDEX} names component {name!r} but {sub} is missing"
                )
            components.append(Component(name, class_name, sub))
        return components
    config_path = folder / COMPONENT_CONFIG
    if not config_path.is_file():
        raise MissingModelFileError(
            f"{folder} is not a diffusers folder: neither {PIPELINE_INDEX} nor "
            f"{COMPONENT_CONFIG} is there"
        )
    class_name = str(_read_json(config_path).get("_class_name", ""))
    if class_name not in SUPPORTED_CLASSES:
        raise _unsupported(class_name or "(no _class_name)", config_path)
    return [Component(class_name, class_name, folder)]


def class_labels(folder: str | os.PathLike) -> dict[int, str]:
    """The class names a pipeline folder records (DiTPipeline's `id2label`), by index; empty
    when there are none."""
    index = Path(folder) / PIPELINE_INDEX
    if not index.is_file():
        return {}
    labels = _read_json(index).get("id2label") or {}
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except (AttributeError, ValueError):
        raise ModelFileError(f"{index}: id2label must map class indices to names") from None


def read_config(component: Component) -> dict[str, Any]:
    """The component's config.json."""
    return _read_json(component.folder / COMPONENT_CONFIG)


def weights_file(folder: Path) -> Path:
    """The single safetensors weights file of a model component folder.

    Raises:
        UnsupportedModelError: only pickle weights (.bin, .ckpt, ...) are there, or weights
            sharded over several files.
        MissingModelFileError: no weights at all.
    """
    tensors = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors")
    if len(tensors) == 1:
        return tensors[0]
    if len(tensors) > 1:
        names = [p.name for p in tensors]
        raise UnsupportedModelError(
            f"{folder}: weights in several safetensors files {names}; keep one variant (e.g. "
            "remove the .fp16 copy) or merge the shards"
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise UnsupportedModelError(
            f"{folder}: only pickle weights {pickles}; diffuse reads safetensors only, since "
            "loading a pickle runs code from the file; save the model with safetensors "
            "(diffusers: save_pretrained(..., safe_serialization=True)) and try again"
        )
    raise MissingModelFileError(f"{folder}: no weights file (*.safetensors)")


def read_weights(component: Component) -> tuple[dict[str, Tensor], Path]:
    """The component's tensors (float32) and the file they came from."""
    path = weights_file(component.folder)
    state = {k: v.float() for k, v in load_safetensors(path).items()}
    return state, path


def weights_digest(folder: str | os.PathLike) -> str:
    """sha256 over the safetensors files and configs of a diffusers folder, in a fixed order:
    the cache key of its on-the-fly conversion."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix in (".safetensors", ".json", ".txt", ".model"))
    )
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
