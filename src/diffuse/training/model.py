"""Building what a recipe names: the noise process, the network, the optimizer's groups."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from diffuse import nets
from diffuse.config import ConfigError, ModelConfig

# Building a process from its config moved to model_folder (pipelines use it too); re-exported.
from diffuse.model_folder import PROCESSES, build_process, check_options
from diffuse.nets.inflate import video_parameter

__all__ = [
    "PROCESSES",
    "build_network",
    "build_process",
    "freeze_parameters",
    "param_groups",
    "preset",
]


def preset(name: str) -> Any:
    """The config dataclass of a named preset of `diffuse.nets` (a ConfigError if unknown)."""

    try:
        return nets.get_config(name)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"model.preset = {name!r}: {err}") from None


def build_network(
    cfg: ModelConfig,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    context_dim: int = 0,
    pooled_dim: int = 0,
) -> tuple[nn.Module, Any]:
    """The network of a [model] section, shaped for the data.

    Args:
        cfg: the preset name and overrides.
        in_channels: image channels.
        image_size: side of the (square) training images.
        num_classes: classes for class conditioning (0: unconditional). The network reserves
            index `num_classes` as the null class for classifier-free guidance.
        context_dim, pooled_dim: text token / pooled embedding widths (0: no text).
    Returns:
        (network, its config dataclass).
    """

    base = preset(cfg.preset)
    data_fields = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    names = {f.name for f in dataclasses.fields(base)}
    if cfg.inpainting:  # the mask and the masked image: 1 + in_channels input channels
        if "extra_in_channels" not in names:
            raise ConfigError(f"model.inpainting: {cfg.preset!r} takes no extra input channels")
        data_fields["extra_in_channels"] = in_channels + 1
    if context_dim:
        if "context_dim" not in names:
            raise ConfigError(f"model.text_encoder: {cfg.preset!r} takes no text conditioning")
        data_fields.update(context_dim=context_dim, pooled_dim=pooled_dim)
    check_options(type(base), cfg.overrides, "model.overrides", tuple(data_fields))
    fields = {k: v for k, v in data_fields.items() if k in names}
    if "out_channels" in names:
        fields["out_channels"] = in_channels
    try:
        net_cfg = dataclasses.replace(base, **fields, **cfg.overrides)
        net = nets.build_network(net_cfg)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {cfg.preset!r} with {cfg.overrides}: {err}") from None
    if cfg.class_embed_std > 0 and num_classes:
        # The one initialisation a recipe may change (see ModelConfig.class_embed_std): EDM maps
        # labels with unit-variance weights (Karras et al. 2022, DhariwalUNet map_label).
        embedding = getattr(net, "class_embed", None)
        if not isinstance(embedding, nn.Embedding):
            raise ConfigError(f"model.class_embed_std: {cfg.preset!r} has no class embedding")
        with torch.no_grad():
            nn.init.normal_(embedding.weight, std=cfg.class_embed_std)
    return net, net_cfg


def freeze_image_layers(net: nn.Module, preset: str) -> None:
    """Train only what a video U-Net adds to its image network (`model.train_layers =
    "temporal"`): temporal blocks, frame embedding and the input convolution (which reads the
    first-frame channels); every other parameter is frozen.

    Raises:
        ConfigError: the network is not a video U-Net.
    """
    if not getattr(getattr(net, "config", None), "temporal", False):
        raise ConfigError(
            f"model.train_layers = 'temporal' needs a video U-Net ({preset!r} with "
            "overrides.temporal = true)"
        )
    for name, p in net.named_parameters():
        p.requires_grad_(video_parameter(name) or name.startswith("conv_in."))


def freeze_parameters(net: nn.Module, prefixes: tuple[str, ...]) -> None:
    """Freeze every parameter whose name starts with one of `prefixes` (`train.frozen`): it
    keeps its initial weights (those of `train.init`) and gets no optimizer state.

    Raises:
        ConfigError: a prefix that matches no parameter (named, with the top-level names).
    """
    names = [name for name, _ in net.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] + "." for name in names})
            raise ConfigError(
                f"train.frozen: {prefix!r} matches no parameter of the network (its parameter "
                f"names start with {', '.join(tops)})"
            )
    for name, p in net.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)


def param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and conv kernels; none on biases, norm gains,
    embeddings and other vectors (the usual split, e.g. nanoGPT's configure_optimizers)."""
    embedding_params = {id(m.weight) for m in net.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in net.parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and id(p) not in embedding_params:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def count_parameters(net: nn.Module, trainable: bool = True) -> int:
    """Number of trainable parameters (with `trainable` False: of frozen ones)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad == trainable)


def default_dtype_bytes() -> int:
    """Bytes per fp32 master weight."""
    return torch.finfo(torch.float32).bits // 8
