"""What a diffusion run reads before it writes anything: the data's codec and text encoder,
the weights of `train.init`, and the sampler names of the sample grids.

Each loader turns a bad setting into a ConfigError naming the recipe key, so a typo fails before
the run folder is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffuse.codecs.text_encoder import TextEncoder
from diffuse.codecs.vae import VAE, load_vae
from diffuse.config import ConfigError, TrainConfig
from diffuse.model_folder import load_model_network
from diffuse.nets.inflate import inflate
from diffuse.nets.io import config_to_dict
from diffuse.samplers.registry import get_sampler, get_schedule
from diffuse.training.data import TrainData

logger = logging.getLogger(__name__)

__all__ = [
    "check_sample_settings",
    "config_differences",
    "load_codec",
    "load_init_weights",
    "load_text_encoder",
]


def check_sample_settings(cfg: TrainConfig) -> None:
    """Raise ConfigError for an unknown sample.sampler / sample.schedule (when grids are on), so
    a typo does not surface only at the first grid."""
    if not cfg.sample.every_steps:
        return
    for key, lookup, name in (
        ("sample.sampler", get_sampler, cfg.sample.sampler),
        ("sample.schedule", get_schedule, cfg.sample.schedule),
    ):
        try:
            lookup(name)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None


def load_text_encoder(cfg: TrainConfig, data: TrainData) -> tuple[TextEncoder, list[str | None]]:
    """The frozen text encoder of `model.text_encoder` and the data's captions.

    Args:
        cfg: the recipe (`model.text_encoder` set).
        data: the training data, which must have captions.
    Returns:
        (encoder, one caption or None per image).
    Raises:
        ConfigError: the encoder cannot be loaded, or the data has no captions.
    """
    name = cfg.model.text_encoder
    try:
        encoder = TextEncoder(None if name == "default" else name)
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise ConfigError(f"model.text_encoder = {name!r}: {err}") from None
    texts = data.captions()
    if not any(texts):
        raise ConfigError(
            f"model.text_encoder is set but the data ({cfg.data.source}) has no captions"
        )
    return encoder, texts


def load_codec(cfg: TrainConfig) -> VAE:
    """The VAE of `data.codec`, checked against the data's image size.

    Args:
        cfg: the recipe (`data.codec` set).
    Returns:
        the codec, on the CPU.
    Raises:
        ConfigError: it cannot be loaded, or its factor does not divide the image size.
    """
    try:
        codec = load_vae(Path(cfg.data.codec).expanduser())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.codec = {cfg.data.codec!r}: {err}") from None
    if cfg.data.image_size % codec.downsample:
        raise ConfigError(
            f"data.codec: image size {cfg.data.image_size} is not divisible by the codec's "
            f"factor {codec.downsample}"
        )
    return codec


def load_init_weights(init: str, net: nn.Module, net_cfg: Any) -> None:
    """Load the weights of the trained model folder `init` (a delta folder too) into `net`.

    Args:
        init: the model folder (`train.init`).
        net: the freshly built network.
        net_cfg: its config, which the folder's network config must equal exactly.
    Raises:
        ConfigError: the folder cannot be loaded, or its network differs (each field named).
    """
    try:
        trained = load_model_network(Path(init).expanduser())
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"train.init = {init!r}: {err}") from None
    if getattr(net_cfg, "temporal", False) and not getattr(trained.config, "temporal", True):
        # an image U-Net starting a video U-Net: inflated, exact frame by frame at first
        try:
            inflate(trained.state_dict(), trained.config, net)
        except ValueError as err:
            raise ConfigError(f"train.init = {init!r}: {err}") from None
        logger.info("initial weights inflated from the image network %s", init)
        return
    have, want = config_to_dict(trained.config), config_to_dict(net_cfg)
    state = trained.state_dict()
    widen = _wider_inputs(have, want)
    if widen:  # e.g. an inpainting model from a text-to-image model: new channels start at 0
        state = _widen_inputs(state, net.state_dict())
        have = want
        logger.info("input channels widened from %d to %d (zero weights)", *widen)
    if have != want:
        lines = config_differences(have["config"], want["config"])
        raise ConfigError(
            f"train.init = {init!r}: its network differs from the recipe's "
            f"({lines or have['kind'] + ' there, ' + want['kind'] + ' here'})"
        )
    net.load_state_dict(state)
    logger.info("initial weights from %s", init)


def _wider_inputs(have: Mapping[str, Any], want: Mapping[str, Any]) -> tuple[int, int] | None:
    """(old, new) extra input channels when the two network configs differ only in having
    more `extra_in_channels` in `want`; else None."""
    old, new = have["config"].get("extra_in_channels"), want["config"].get("extra_in_channels")
    if have["kind"] != want["kind"] or old is None or new is None or not new > old:
        return None
    same = {**have["config"], "extra_in_channels": new} == want["config"]
    return (old, new) if same else None


def _widen_inputs(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`state` with each weight that the wider network has more input channels of (dim 1)
    copied into zeros of the new shape: the added channels have no effect until trained."""
    out = {}
    for key, value in state.items():
        shape = target[key].shape if key in target else value.shape
        if shape != value.shape and value.ndim >= 2 and shape[1] > value.shape[1]:
            wide = torch.zeros(shape, dtype=value.dtype)
            wide[:, : value.shape[1]] = value
            value = wide
        out[key] = value
    return out


def config_differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """'key: value there, value here' for each field of `want` that `have` holds otherwise.

    Args:
        have: the fields of the loaded thing.
        want: the fields the recipe asks for.
    Returns:
        the differences joined by '; ' (empty if none).
    """
    return "; ".join(
        f"{k}: {have.get(k)!r} there, {v!r} here" for k, v in want.items() if have.get(k) != v
    )
