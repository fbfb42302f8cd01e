"""The saved-model folder: the one thing training writes and pipelines read.

A model folder (what `diffuse train` leaves in RUN/model/, and the bundled model) holds

    config.json        the network's architecture (`nets.io`)
    model.safetensors  the network's weights (`nets.io`)
    diffusion.json     `ModelInfo`: process, parametrisation, conditioning, codec, sampling
                       defaults, the training recipe and provenance
    vae/               the codec of a latent model (a copy of the VAE folder it was trained on)
    solvers.json       optional: solvers fitted to the weights by `diffuse fit-solver`
                       (`diffuse.fitted_solvers`)

    save_model("runs/x/model", ema_net, info, codec_source=Path("models/shapes-vae"))
    model = load_model("runs/x/model")          # or the run folder "runs/x"
    images = model.decode(latents)

A diffusers folder (Stable Diffusion, DDPM, DiT; see `diffuse.interop`) is accepted wherever a
model folder is: `load_model` converts it once into a model folder under $DIFFUSE_CACHE,
keyed by the sha256 of its weights and configs (`cached_import`).

A delta folder (what a fine-tuning run with `train.frozen` writes) stores only the tensors
that differ from the model it was fine-tuned from, plus a reference to that base under "delta"
in diffusion.json: the sha256 of the base's weights file and where to find it, by name for a
model bundled with diffuse (diffuse/assets/models/NAME), else as a path relative to the delta
folder (so the two move together). `load_model` loads the base (itself possibly a delta
folder), checks its hash and overlays the stored tensors: the network is the one training held.
Its codec is the base's (codec "@base", nothing copied) when the run trained on the base's own
codec; else the folder holds a copy as usual.

    save_model("runs/y/model", ema_net, info, codec_source=vae_dir, base="runs/x/model")
    net = load_model_network("runs/y/model")    # the base's tensors + the stored ones

diffusion.json carries a format version. Version 2 (written for every full folder) stores the
four sampling defaults under "sampling"; version 1 (every model shipped before it) stored the
recipe's whole [sample] section under "sample" and is still read. Version 3 is written only for
delta folders (a diffuse that reads up to version 2 refuses them clearly instead of loading
half a network). An unknown version is an error naming the file and the version, never a guess.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffuse.codecs.autoencoder_kl import save_codec
from diffuse.codecs.base import Codec
from diffuse.codecs.codec_folder import load_codec
from diffuse.codecs.identity import IdentityCodec
from diffuse.config import ConfigError, ProcessConfig, TrainConfig, process_options, to_dict
from diffuse.denoiser import Denoiser, Parametrization
from diffuse.interop import import_diffusers, is_diffusers_folder, weights_digest
from diffuse.io import (
    MissingModelFileError,
    ModelFileError,
    atomic_folder,
    atomic_write_text,
    file_sha256,
)
from diffuse.nets.io import CONFIG_FILE, WEIGHTS_FILE, load_network, save_network
from diffuse.processes import PROCESSES, NoiseProcess

__all__ = [
    "BASE_CODEC",
    "BUNDLED_MODELS",
    "BaseReference",
    "CODEC_FOLDER",
    "CONFIG_FILE",
    "DIFFUSERS_CACHE_ENV",
    "DELTA_FORMAT",
    "FORMAT",
    "IMAGE_KIND",
    "INFO_FILE",
    "PROCESSES",
    "SOLVERS_FILE",
    "WEIGHTS_FILE",
    "ModelFileError",
    "ModelInfo",
    "SamplingDefaults",
    "TEXT_KIND",
    "TrainedModel",
    "build_process",
    "cached_import",
    "check_options",
    "load_model",
    "provenance",
    "read_info",
    "resolve_model_folder",
    "find_base",
    "import_diffusers_folder",
    "load_model_network",
    "save_model",
]

logger = logging.getLogger(__name__)

INFO_FILE = "diffusion.json"  # process, parametrisation, conditioning, codec, sampling defaults
CODEC_FOLDER = "vae"  # subfolder holding a latent model's codec
SOLVERS_FILE = "solvers.json"  # fitted solvers (`diffuse.fitted_solvers`), optional
FORMAT = 2  # the diffusion.json version save_model writes for a full folder
DELTA_FORMAT = 3  # ... and for a delta folder (only the tensors that differ from a base)
_READABLE = (1, 2, 3)
BASE_CODEC = "@base"  # ModelInfo.codec of a delta folder that uses its base model's codec
# Models bundled with the package, one folder each; a delta folder names such a base by name.
BUNDLED_MODELS = Path(str(resources.files("diffuse") / "assets" / "models"))
DIFFUSERS_CACHE_ENV = "DIFFUSE_CACHE"  # where converted diffusers folders are kept
TEXT_FOLDER = "text_encoder"  # subfolder of an imported model's text encoder and tokenizer
# diffusion.json's "kind": absent or "image" for image models; "text" for text models, which
# the image loaders refuse (and the text loader refuses image folders), each with a message
# naming the command that reads the folder.
IMAGE_KIND = "image"
TEXT_KIND = "text"
TEXT_NETWORK_KIND = "text-transformer"  # config.json "kind" of a text model's network


def check_options(
    cls: type, options: Mapping[str, Any], where: str, reserved: tuple[str, ...] = ()
) -> None:
    """Check that `options` name fields of the dataclass `cls`.

    Args:
        cls: the dataclass the options are passed to.
        options: field name -> value.
        where: the recipe key they came from, for messages (e.g. "process.options").
        reserved: fields set from elsewhere (the data), which the options must not set.
    Raises:
        ConfigError: a reserved or unknown key (with the closest valid name, if any).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key in reserved:
            raise ConfigError(f"{where}.{key} is set from the data; remove it")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown key {where}.{key!r} for {cls.__name__}{hint}; valid: {', '.join(names)}"
            )


def build_process(cfg: ProcessConfig) -> NoiseProcess:
    """The noise process of a [process] section (or a saved model), with its options checked.

    Args:
        cfg: kind, options and sigma_data (EDM's default for its own `sigma_data`).
    Returns:
        The process.
    Raises:
        ConfigError: an unknown kind, unknown options or invalid values.
    """
    if cfg.kind not in PROCESSES:
        raise ConfigError(f"process.kind must be one of {sorted(PROCESSES)}, got {cfg.kind!r}")
    cls = PROCESSES[cfg.kind]
    options = dataclasses.asdict(cfg.options)  # typed per kind, checked when read
    if cfg.kind == "edm":
        options.setdefault("sigma_data", cfg.sigma_data)
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"process.options {cfg.options}: {err}") from None


@dataclass(frozen=True)
class SamplingDefaults:
    """How a model samples when the caller does not say: the ONE default of each setting.

    Args:
        sampler, schedule: names known to `diffuse.samplers.registry`.
        steps: sampler steps.
        guidance: classifier-free guidance scale (1: none).
    """

    sampler: str = "dpmpp_2m"
    schedule: str = "karras"
    steps: int = 25
    guidance: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampling steps must be an integer >= 1, got {self.steps!r}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"sampling guidance must be a finite number >= 0, got {self.guidance}")


@dataclass(frozen=True)
class BaseReference:
    """The base model of a delta folder: what its weights hash to and where it is.

    Args:
        weights_sha256: sha256 of the base's weights file (model.safetensors).
        bundled: the name of a model bundled with diffuse (`BUNDLED_MODELS`/NAME), or "".
        path: else the base folder, relative to the delta folder.
    """

    weights_sha256: str
    bundled: str = ""
    path: str = ""

    def __post_init__(self) -> None:
        if bool(self.bundled) == bool(self.path):
            raise ValueError(
                f"a delta's base names exactly one of a bundled model or a path, got bundled "
                f"{self.bundled!r} and path {self.path!r}"
            )
        if len(self.weights_sha256) != 64:
            raise ValueError(
                f"base weights_sha256 must be 64 hex digits, got {self.weights_sha256!r}"
            )

    def describe(self) -> str:
        """'bundled model NAME' or 'PATH', and the hash prefix, for messages and `diffuse info`."""
        where = f"bundled model {self.bundled!r}" if self.bundled else repr(self.path)
        return f"{where} (weights sha256 {self.weights_sha256[:12]})"

    def to_dict(self) -> dict[str, str]:
        """The JSON form under diffusion.json's "delta"."""
        where = {"bundled": self.bundled} if self.bundled else {"path": self.path}
        return {"weights_sha256": self.weights_sha256, **where}


@dataclass(frozen=True)
class ModelInfo:
    """What diffusion.json records about a model, typed.

    Args:
        process: kind, options, parametrisation and sigma_data of the model's noise process.
        channels, image_size: (C, S) of what the network makes: S x S latents of a latent
            model, pixels of a pixel model.
        class_names: the classes it is conditioned on (empty: unconditional or text).
        null_label: the network's "no class" index (default: len(class_names)).
        text_encoder: the text encoder it was trained with ("" none, "default" the bundled
            MiniLM, else a folder or package name).
        text_padding: how prompts are padded for it ("longest" with a mask, or "max_length":
            a fixed-length unmasked context, as Stable Diffusion's CLIP-conditioned networks
            were trained); see `codecs.text_encoder.TextEncoder`.
        codec: subfolder holding its codec ("" pixel space: the identity codec; BASE_CODEC:
            the codec of the base model of a delta folder).
        sampling: the default sampler, schedule, steps and guidance.
        recipe: the training recipe, as JSON (None if unknown).
        base_model: provenance of the model it was fine-tuned from (see `provenance`).
        inpainting: an inpainting model (mask and masked image as extra input channels,
            `denoiser.inpainting_inputs`).
        delta: the base model of a delta folder (whose weights file holds only the tensors
            that differ from the base's), else None.
        format: the diffusion.json version it was read from (`save_model` writes FORMAT, or
            DELTA_FORMAT for a delta folder).
    """

    process: ProcessConfig
    channels: int
    image_size: int
    class_names: tuple[str, ...] = ()
    null_label: int = -1
    text_encoder: str = ""
    text_padding: str = "longest"
    codec: str = ""
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    recipe: dict[str, Any] | None = None
    base_model: dict[str, Any] | None = None
    inpainting: bool = False
    delta: BaseReference | None = None
    format: int = FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.null_label < 0:
            object.__setattr__(self, "null_label", len(self.class_names))
        if self.channels < 1 or self.image_size < 1:
            raise ValueError(
                f"channels and image_size must be >= 1, got {self.channels}, {self.image_size}"
            )
        Parametrization.parse(self.process.parametrization)  # names the valid ones if unknown

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the network makes."""
        return (self.channels, self.image_size, self.image_size)

    @classmethod
    def from_recipe(
        cls,
        cfg: TrainConfig,
        *,
        class_names: tuple[str, ...] | list[str],
        channels: int,
        image_size: int,
        base_model: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """The info of a model trained from a recipe (what the trainer exports).

        Args:
            cfg: the training recipe (process, text encoder, [sample] defaults, the record).
            class_names: the data's classes ([] for unconditional and text models).
            channels, image_size: of what the network makes (latents of a latent model).
            base_model: `provenance` of `train.init`'s folder, if fine-tuned.
        Returns:
            The info; `save_model` sets `codec` when it is given a codec folder.
        """
        s, p = cfg.sample, cfg.process
        return cls(
            # What sampling needs of the process; the loss weighting stays in the recipe.
            process=ProcessConfig(
                kind=p.kind,
                parametrization=p.parametrization,
                sigma_data=p.sigma_data,
                options=p.options,
            ),
            channels=channels,
            image_size=image_size,
            class_names=tuple(class_names),
            text_encoder=cfg.model.text_encoder,
            sampling=SamplingDefaults(s.sampler, s.schedule, s.steps, float(s.guidance)),
            recipe=to_dict(cfg),
            base_model=base_model,
            inpainting=cfg.model.inpainting,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to diffusion.json (version FORMAT, DELTA_FORMAT if a delta)."""
        p = self.process
        data: dict[str, Any] = {
            "format": FORMAT if self.delta is None else DELTA_FORMAT,
            "process": {"kind": p.kind, "options": dataclasses.asdict(p.options)},
            "parametrization": p.parametrization,
            "sigma_data": p.sigma_data,
            "class_names": list(self.class_names),
            "null_label": self.null_label,
            "channels": self.channels,
            "image_size": self.image_size,
            "text_encoder": self.text_encoder,
            "text_padding": self.text_padding,
            "codec": self.codec,
            "sampling": dataclasses.asdict(self.sampling),
            "recipe": self.recipe,
        }
        if self.base_model is not None:
            data["base_model"] = self.base_model
        if self.inpainting:
            data["inpainting"] = True
        if self.delta is not None:
            data["delta"] = self.delta.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Inverse of `to_dict`; also reads version 1 (its "sample" section).

        Raises:
            ValueError: an unknown version, a missing key or a bad value (see `read_info`
                for the error naming the file).
        """
        version = data.get("format", 1)  # the first folders had no version key
        kind = data.get("kind", IMAGE_KIND)  # image folders written before kinds had none
        if kind != IMAGE_KIND:
            raise ValueError(
                f"this is a {kind} model, not an image model; use `diffuse {kind}` "
                f"(Python: diffuse.model_folder.load_{kind}_model)"
            )
        if version not in _READABLE:
            raise ValueError(
                f"unknown format version {version!r} (this diffuse reads versions "
                f"{', '.join(map(str, _READABLE))}); upgrade diffuse to load it"
            )
        process = data["process"]
        kind = process["kind"]  # the noise process from here on
        if kind not in PROCESSES:
            raise ValueError(f"process kind must be one of {sorted(PROCESSES)}, got {kind!r}")
        # Version 1 kept the whole [sample] recipe section (grid seeds and prompts too).
        stored = data.get("sampling" if version >= 2 else "sample") or {}
        known = {f.name for f in dataclasses.fields(SamplingDefaults)}
        sampling = {k: v for k, v in stored.items() if k in known}
        if "steps" in sampling:
            sampling["steps"] = int(sampling["steps"])
        if "guidance" in sampling:
            sampling["guidance"] = float(sampling["guidance"])
        delta = None
        if version >= DELTA_FORMAT and data.get("delta") is not None:
            stored_delta = data["delta"]
            delta = BaseReference(
                weights_sha256=str(stored_delta["weights_sha256"]),
                bundled=str(stored_delta.get("bundled") or ""),
                path=str(stored_delta.get("path") or ""),
            )
        return cls(
            process=ProcessConfig(
                kind=kind,
                parametrization=data["parametrization"],
                sigma_data=float(data["sigma_data"]),
                options=process_options(kind, process.get("options") or {}),
            ),
            channels=int(data["channels"]),
            image_size=int(data["image_size"]),
            class_names=tuple(data.get("class_names") or ()),
            null_label=int(data.get("null_label", -1)),
            text_encoder=str(data.get("text_encoder") or ""),
            text_padding=str(data.get("text_padding") or "longest"),
            codec=str(data.get("codec") or ""),
            sampling=SamplingDefaults(**sampling),
            recipe=data.get("recipe"),
            base_model=data.get("base_model"),
            inpainting=bool(data.get("inpainting", False)),
            delta=delta,
            format=int(version),
        )


def resolve_model_folder(folder: str | os.PathLike) -> Path:
    """The model folder itself, the `model/` folder of a training run folder, or the cached
    conversion of a diffusers folder (see `cached_import`).

    Args:
        folder: a model folder, a run folder written by `diffuse train`, or a diffusers
            pipeline or network folder.
    Returns:
        The folder that holds diffusion.json.
    Raises:
        MissingModelFileError: neither holds one (a FileNotFoundError; the path looked at).
        ModelFileError: a diffusers folder that cannot be imported (why, in the message).
    """
    folder = Path(folder)
    if is_diffusers_folder(folder):
        return cached_import(folder)
    if (folder / INFO_FILE).is_file():
        return folder
    if (folder / "model" / INFO_FILE).is_file():
        return folder / "model"
    raise MissingModelFileError(
        f"{folder} holds no trained model ({INFO_FILE} missing); pass the run folder or "
        "its model/ folder written by `diffuse train`"
    )


def read_info(folder: str | os.PathLike) -> ModelInfo:
    """Read a model folder's diffusion.json (any readable version).

    Args:
        folder: a model folder or a training run folder.
    Returns:
        The typed info.
    Raises:
        MissingModelFileError: no diffusion.json there.
        ModelFileError: a damaged file or an unknown version (naming the file and the fault).
    """
    path = resolve_model_folder(folder) / INFO_FILE
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path} is damaged: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFileError(
            f"{path} is damaged: expected a JSON object, got {type(data).__name__}"
        )
    try:
        return ModelInfo.from_dict(data)
    except KeyError as err:
        raise ModelFileError(f"{path} is damaged: missing key {err}") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{path}: {err}") from None


def save_model(
    folder: str | os.PathLike,
    net: nn.Module,
    info: ModelInfo,
    codec_source: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
) -> Path:
    """Write a complete model folder, replacing any old one in a single rename.

    The network (`nets.io.save_network`), diffusion.json and a copy of the codec folder go into
    a temporary folder next to `folder`, which is then swapped into place, so `folder` is always
    either the old model or the whole new one.

    With `base`, a delta folder is written: only the tensors of `net` that differ from the base
    model's (in value, shape or presence) are stored, with a `BaseReference` to the base; a
    codec identical to the base's (same files) is not copied but read from the base.

    Args:
        folder: destination model folder.
        net: the network to ship (a UNet or DiT; the trainer passes its EMA copy).
        info: what to record; its `codec` is set to CODEC_FOLDER when `codec_source` is given.
        codec_source: the VAE folder of a latent model (copied into the model), else None.
        base: the model folder `net` was fine-tuned from (a delta folder), else None.
    Returns:
        The folder path.
    Raises:
        ValueError: `info` names a codec but no `codec_source` is given.
        MissingModelFileError, ModelFileError: `base` cannot be loaded.
    """
    folder = Path(folder)
    keys = None
    if base is not None:
        base = Path(base)
        base_state = load_model_network(base).state_dict()
        keys = _differing_tensors(net.state_dict(), base_state)
        info = dataclasses.replace(info, delta=_base_reference(base, folder), codec="")
        base_codec = _codec_folder(base) if (base / INFO_FILE).is_file() else None
        if codec_source is not None and _same_files(Path(codec_source), base_codec):
            info, codec_source = dataclasses.replace(info, codec=BASE_CODEC), None
    if codec_source is not None:
        info = dataclasses.replace(info, codec=info.codec or CODEC_FOLDER)
    elif info.codec and info.codec != BASE_CODEC:
        raise ValueError(f"info names the codec folder {info.codec!r} but no codec_source given")
    elif info.codec == BASE_CODEC and info.delta is None:
        raise ValueError(f"info names the codec {BASE_CODEC!r} of a base model but has none")
    with atomic_folder(folder) as tmp:
        save_network(net, tmp, keys=keys)
        if codec_source is not None:
            shutil.copytree(codec_source, tmp / info.codec)
        atomic_write_text(tmp / INFO_FILE, json.dumps(info.to_dict(), indent=2) + "\n")
    if keys is not None:
        logger.info(
            "%s stores %d of %d tensors; the rest are those of its base %s",
            folder,
            len(keys),
            len(net.state_dict()),
            info.delta.describe(),
        )
    return folder


def _differing_tensors(state: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> set[str]:
    """Names of the tensors of `state` that the base lacks or holds otherwise (bit for bit, in
    `state`'s dtype, which is how loading converts the base's)."""
    return {
        k
        for k, v in state.items()
        if k not in base
        or base[k].shape != v.shape
        or not torch.equal(base[k].to(v.device, v.dtype), v)
    }


def _base_reference(base: Path, folder: Path) -> BaseReference:
    """How the delta folder `folder` finds `base`: by name when its weights are those of a
    bundled model, else by its path relative to `folder`."""
    sha = file_sha256(base / WEIGHTS_FILE)
    if BUNDLED_MODELS.is_dir():
        for bundled in sorted(BUNDLED_MODELS.iterdir()):
            weights = bundled / WEIGHTS_FILE
            if weights.is_file() and file_sha256(weights) == sha:
                return BaseReference(sha, bundled=bundled.name)
    return BaseReference(sha, path=os.path.relpath(base.resolve(), folder.resolve()))


def _same_files(a: Path, b: Path | None) -> bool:
    """Whether folders `a` and `b` hold the same files with the same contents."""

    def digests(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): file_sha256(p) for p in folder.rglob("*") if p.is_file()
        }

    return b is not None and digests(a) == digests(b)


def find_base(folder: str | os.PathLike, ref: BaseReference) -> Path:
    """The base model folder of the delta folder `folder`, checked against its weights hash.

    Args:
        folder: the delta folder (a relative base path is read against it).
        ref: its `ModelInfo.delta`.
    Returns:
        The base folder.
    Raises:
        MissingModelFileError: the base is not there (both folders named).
        ModelFileError: the base there has other weights (both hashes named).
    """
    folder = Path(folder)
    if ref.bundled:
        base = BUNDLED_MODELS / ref.bundled
        where = f"the bundled model {ref.bundled!r} ({base})"
    else:
        base = folder / ref.path
        where = f"{ref.path!r} ({os.path.normpath(base.absolute())})"
    weights = base / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingModelFileError(
            f"{folder} stores only what differs from its base model {where}, which is missing "
            f"(no {WEIGHTS_FILE}); put the base with weights sha256 {ref.weights_sha256[:12]} there"
        )
    have = file_sha256(weights)
    if have != ref.weights_sha256:
        raise ModelFileError(
            f"{folder} was fine-tuned from base weights sha256 {ref.weights_sha256[:12]}, but its "
            f"base {where} has weights sha256 {have[:12]}; put the right base there"
        )
    return base


def load_model_network(
    folder: str | os.PathLike, device: str | torch.device = "cpu", *, _chain: tuple[Path, ...] = ()
) -> nn.Module:
    """The whole network of a model folder: its own weights, or for a delta folder its base's
    (loaded the same way, so a chain of deltas works) overlaid with the tensors it stores.

    Args:
        folder: a model folder (or a bare network folder: config.json and model.safetensors).
        device: where the weights go.
    Returns:
        The network in eval mode.
    Raises:
        MissingModelFileError, ModelFileError: a missing or damaged file, a missing base or
            one with other weights (see `find_base`), a chain of bases that loops.
    """
    folder = Path(folder)
    base_state = None
    if (folder / INFO_FILE).is_file():
        info = read_info(folder)
        if info.delta is not None:
            chain = (*_chain, folder.resolve())
            base = find_base(folder, info.delta)
            if base.resolve() in chain:
                raise ModelFileError(f"{folder}: its chain of base models loops back to {base}")
            base_state = load_model_network(base, _chain=chain).state_dict()
    return load_network(folder, device=device, base_state=base_state)


def provenance(folder: str | os.PathLike) -> dict[str, Any]:
    """Provenance of a fine-tuned model's start: the folder, the sha256 of its weights, its
    recipe and, in turn, its own base model (so the whole chain of recipes stays on record even
    after the base folder is overwritten).

    Args:
        folder: the model folder fine-tuning started from.
    Returns:
        {"path", "weights_sha256", "recipe"?, "base_model"?} as JSON-ready values.
    """
    folder = Path(folder)
    record: dict[str, Any] = {"path": str(folder)}
    record["weights_sha256"] = file_sha256(folder / WEIGHTS_FILE)
    if (folder / INFO_FILE).is_file():
        info = read_info(folder)
        record["recipe"] = info.recipe
        if info.base_model is not None:
            record["base_model"] = info.base_model
    return record


@dataclass
class TrainedModel:
    """A loaded model: its denoiser, its codec and what it was trained on.

    The denoiser makes `shape` tensors (latents of the codec); `decode` turns them into images.
    Pixel-space models have the identity codec, so callers never branch on "latent or not".
    """

    denoiser: Denoiser
    info: ModelInfo
    codec: Codec  # IdentityCodec (pixel space) or a VAE
    folder: Path  # the model folder it was loaded from

    @property
    def class_names(self) -> list[str]:
        """The classes the model is conditioned on (index = label)."""
        return list(self.info.class_names)

    @property
    def null_label(self) -> int:
        """The network's "no class" index, the unconditional input of guidance."""
        return self.info.null_label

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the denoiser makes (latent or image)."""
        return self.info.shape

    @property
    def num_classes(self) -> int:
        """Classes the model is conditioned on (0: unconditional)."""
        return len(self.info.class_names)

    @property
    def image_size(self) -> int:
        """Side of the decoded images."""
        return self.shape[-1] * self.codec.downsample

    def decode(self, latents: Tensor) -> Tensor:
        """Images [B, C, H, W] in [-1, 1] (clamped) from what the denoiser made."""
        return self.codec.decode(latents).clamp(-1, 1)


def _codec_folder(
    folder: Path, info: ModelInfo | None = None, chain: tuple[Path, ...] = ()
) -> Path | None:
    """The codec folder of a model folder (that of its base for codec BASE_CODEC), or None for
    a pixel model."""
    info = info or read_info(folder)
    if not info.codec:
        return None
    if info.codec != BASE_CODEC:
        return folder / info.codec
    if info.delta is None:
        raise ModelFileError(f"{folder / INFO_FILE}: codec {BASE_CODEC!r} but no base model")
    base, chain = find_base(folder, info.delta), (*chain, folder.resolve())
    if base.resolve() in chain:
        raise ModelFileError(f"{folder}: its chain of base models loops back to {base}")
    return _codec_folder(base, chain=chain)


def _load_codec(folder: Path, info: ModelInfo) -> Codec:
    """The model's codec: the VAE in the subfolder `info.codec` names (or the base's), else the
    identity; checked against the latent shape the network makes."""
    source = _codec_folder(folder, info)
    if source is None:
        return IdentityCodec(info.channels)
    codec = load_codec(source)
    made = codec.latent_shape(info.image_size * codec.downsample)
    if tuple(made) != info.shape:
        raise ModelFileError(
            f"{folder}: the network makes latents {info.shape} but the codec {info.codec!r} "
            f"encodes to {tuple(made)} (latent channels {codec.channels}, factor "
            f"{codec.downsample})"
        )
    return codec.eval().requires_grad_(False)


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a model folder, or the `model/` folder inside a training run folder.

    Args:
        folder: the model folder or run folder.
        device: where the network and the codec go.
    Returns:
        The model, frozen, in eval mode.
    Raises:
        MissingModelFileError: no model there, or one of its files is missing, or the base
            of a delta folder (a FileNotFoundError too; the path in the message).
        ModelFileError: a damaged, empty or truncated file, an unknown format version, a
            codec that does not match the network, or a delta folder's base with other weights
            (a ValueError naming the file).
    """
    folder = resolve_model_folder(folder)
    info = read_info(folder)
    try:
        process = build_process(info.process)
    except ConfigError as err:
        raise ModelFileError(f"{folder / INFO_FILE}: {err}") from None
    codec = _load_codec(folder, info)
    # Convolution kernels in channels_last, the layout the networks run their activations in:
    # oneDNN otherwise reorders each kernel on every call (the largest cost at small feature
    # maps). Only the memory layout changes, not the values.
    net = load_model_network(folder).to(device, memory_format=torch.channels_last)
    net = net.eval().requires_grad_(False)
    denoiser = Denoiser(
        net, process, info.process.parametrization, sigma_data=info.process.sigma_data
    ).eval()  # as its network: sampling then never switches modes (pipelines.sample.eval_mode)
    return TrainedModel(denoiser, info, codec.to(device), folder)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link a file (no copy of a large text encoder), or copy it across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def import_diffusers_folder(
    source: str | os.PathLike, folder: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Convert a diffusers folder into a diffuse model folder.

    The network, the process and sampling defaults of its scheduler, its KL autoencoder (as
    `vae/`) and its text encoder with tokenizer (as `text_encoder/`) are written; the folder
    appears whole or not at all.

    Args:
        source: a diffusers pipeline folder or network folder.
        folder: the diffuse model folder to write.
        overwrite: replace an existing `folder`.
    Returns:
        The folder.
    Raises:
        FileExistsError: `folder` exists and overwrite is False.
        MissingModelFileError, ModelFileError: see `interop.import_diffusers`.
    """
    source, folder = Path(source), Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass --overwrite to replace it")
    imported = import_diffusers(source)
    text, classes = imported.text_encoder is not None, bool(imported.class_names)
    info = ModelInfo(
        process=imported.process,
        channels=imported.channels,
        image_size=imported.image_size,
        class_names=imported.class_names,
        text_encoder=TEXT_FOLDER if text else "",
        text_padding=imported.text_padding,
        sampling=SamplingDefaults(
            imported.sampler, imported.schedule, 50, 7.5 if text else (4.0 if classes else 1.0)
        ),
        base_model={
            "path": str(source),
            "format": "diffusers",
            "weights_sha256": weights_digest(source),
        },
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.import-{uuid.uuid4().hex[:8]}")
    try:
        codec_source = None
        if imported.codec is not None:
            codec_source = save_codec(imported.codec, staging / "codec")
        model = save_model(staging / "model", imported.net, info, codec_source=codec_source)
        if text:
            (model / TEXT_FOLDER).mkdir()
            for part in (imported.text_encoder, imported.tokenizer):
                for path in sorted(part.iterdir()):
                    if path.is_file():
                        _link_or_copy(path, model / TEXT_FOLDER / path.name)
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            os.rename(folder, old)
        os.rename(model, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def cached_import(source: str | os.PathLike) -> Path:
    """The diffuse model folder of a diffusers folder, converted once and kept under
    $DIFFUSE_CACHE/diffusers/ (default ~/.cache/diffuse) by the hash of its weights and configs,
    so a changed folder is converted again and an unchanged one is not.

    Args:
        source: a diffusers pipeline folder or network folder.
    Returns:
        The cached model folder.
    """
    root = Path(os.environ.get(DIFFUSERS_CACHE_ENV) or "~/.cache/diffuse").expanduser()
    folder = root / "diffusers" / weights_digest(source)[:20]
    if (folder / INFO_FILE).is_file():
        return folder
    logger.info("converting the diffusers folder %s into %s", source, folder)
    try:
        return import_diffusers_folder(source, folder, overwrite=True)
    except FileExistsError:  # pragma: no cover - another process finished it first
        return folder
