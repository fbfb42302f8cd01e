"""Building a diffusion run: the inputs read before anything is written (`read_inputs`), then
everything one rank trains with (`assemble`): caches, network, EMA, replica, optimizer.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffuse.codecs.text_encoder import TextEncoder
from diffuse.codecs.vae import VAE
from diffuse.config import ConfigError, TrainConfig, to_dict
from diffuse.denoiser import Denoiser
from diffuse.model_folder import provenance
from diffuse.nets.controlnet import ControlledUNet, ControlNet, ControlNetConfig
from diffuse.processes import NoiseProcess
from diffuse.training import dist
from diffuse.training.captions import CaptionBank
from diffuse.training.control_maps import ControlMaps
from diffuse.training.data import BatchOrder, TrainData
from diffuse.training.datasets import build_dataset
from diffuse.training.ema import EMA
from diffuse.training.inpaint_masks import InpaintMasks
from diffuse.training.inputs import load_codec, load_init_weights, load_text_encoder
from diffuse.training.model import (
    build_process,
    count_parameters,
    freeze_image_layers,
    freeze_parameters,
    param_groups,
)
from diffuse.training.replica import Replica

logger = logging.getLogger(__name__)

__all__ = ["Inputs", "Run", "assemble", "read_inputs", "set_threads"]


@dataclass
class Inputs:
    """What is read and built before the run folder is touched."""

    data: TrainData
    order: BatchOrder
    codec: VAE | None
    text: tuple[TextEncoder, list[str | None]] | None
    num_classes: int
    build_net: Callable[[], tuple[nn.Module, Any]]
    net: nn.Module
    net_cfg: Any


@dataclass
class Run:
    """Everything one rank trains with."""

    cfg: TrainConfig
    out: Path
    info: dist.DistInfo
    inputs: Inputs
    captions: CaptionBank | None
    process: NoiseProcess
    ema: EMA
    replica: Replica
    optimizer: torch.optim.Optimizer
    denoiser: Denoiser
    config_record: dict[str, Any]
    per_rank: int
    image_shape: tuple[int, ...]  # one training item: (C, H, W) or a clip's (C, T, H, W)
    controls: ControlMaps | None = None  # a ControlNet run's control maps
    inpaint: InpaintMasks | None = None  # an inpainting model's masks

    @property
    def null_label(self) -> int:
        return self.inputs.num_classes  # the network's reserved "no class" index


def set_threads(cfg: TrainConfig, info: dist.DistInfo) -> None:
    """Set train.threads, or share the cores evenly among CPU ranks.

    Args:
        cfg: the recipe.
        info: this process's place in the process group.
    Raises:
        ConfigError: the global batch does not split evenly across the ranks.
    """
    if cfg.optim.batch_size % info.world_size:
        raise ConfigError(
            f"optim.batch_size = {cfg.optim.batch_size} must be divisible by the "
            f"{info.world_size} processes"
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif info.distributed and info.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world_size))


def read_inputs(cfg: TrainConfig, net_builder: Callable[..., tuple[nn.Module, Any]]) -> Inputs:
    """Read the data, codec and text encoder, and build the network (with `train.init`),
    shaped for what training feeds it: latents when there is a codec. Writes nothing.

    Args:
        cfg: the recipe.
        net_builder: `build_network` or a replacement with its signature.
    Returns:
        the inputs.
    """
    data = TrainData(build_dataset(cfg.data, seed=cfg.train.seed), cfg.data)
    order = BatchOrder(len(data), cfg.optim.batch_size, cfg.train.seed, data.dataset.fingerprint())
    if cfg.model.inpainting and cfg.sample.every_steps:
        raise ConfigError("model.inpainting is set: sample.every_steps must be 0 (no sample grids)")
    text = load_text_encoder(cfg, data) if cfg.model.text_encoder else None
    codec = load_codec(cfg) if cfg.data.codec else None
    num_classes = data.num_classes if cfg.model.class_conditional else 0
    channels, size = data.channels, data.image_size
    if codec is not None:
        channels, size, _ = codec.latent_shape(data.image_size)
    text_dims = {}
    if text is not None:
        text_dims = {"context_dim": text[0].dim, "pooled_dim": text[0].pooled_dim}
    build_net = functools.partial(
        net_builder,
        cfg.model,
        in_channels=channels,
        image_size=size,
        num_classes=num_classes,
        **text_dims,
    )
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    net, net_cfg = build_net()
    if cfg.train.init:  # fine-tuning: the EMA starts from these weights too
        load_init_weights(cfg.train.init, net, net_cfg)
    if cfg.control.kind:
        net = with_controlnet(cfg, net, net_cfg, codec)
    if cfg.model.train_layers == "temporal":
        freeze_image_layers(net, cfg.model.preset)
    if cfg.train.frozen:  # these keep the weights of train.init; the model stores the rest
        freeze_parameters(net, cfg.train.frozen)
    return Inputs(data, order, codec, text, num_classes, build_net, net, net_cfg)


def with_controlnet(
    cfg: TrainConfig, base: nn.Module, base_cfg: Any, codec: VAE | None
) -> nn.Module:
    """The network a ControlNet recipe trains: the frozen base of `train.init` steered by a
    fresh ControlNet copied from its encoder (zero projections: it starts as the base).

    Raises:
        ConfigError: no `train.init`, a base that is no U-Net, or a setting a ControlNet run
            cannot honour (flips, sample grids).
    """
    kind = cfg.control.kind
    if not cfg.train.init:
        raise ConfigError(f"control.kind = {kind!r} needs train.init: the base model to steer")
    if cfg.data.flip:
        raise ConfigError("control.kind is set: data.flip must be false (maps are not mirrored)")
    if cfg.sample.every_steps:
        raise ConfigError("control.kind is set: sample.every_steps must be 0 (no sample grids)")
    factor = codec.downsample if codec is not None else 1
    try:
        config = ControlNetConfig(kind, factor, base_cfg, cfg.control.hint_channels)
        return ControlledUNet(base, ControlNet.from_base(base, config))
    except (TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"control.kind = {kind!r}: {err}") from None


def assemble(cfg: TrainConfig, out: Path, info: dist.DistInfo, inputs: Inputs) -> Run:
    """Fill the latent and caption caches, then put the network on its device with its EMA,
    replica wrapping, optimizer and denoiser.

    Args:
        cfg: the recipe.
        out: the run folder (already prepared).
        info: this process's place in the process group.
        inputs: what `read_inputs` returned.
    Returns:
        the run.
    """
    o, data, net, codec = cfg.optim, inputs.data, inputs.net, inputs.codec
    controls = ControlMaps(cfg.control.kind, data) if cfg.control.kind else None
    inpaint = None
    if cfg.model.inpainting:
        factor = codec.downsample if codec is not None else 1
        inpaint = InpaintMasks(data, cfg.data.image_size, factor)
    if codec is not None:  # latent diffusion: every image encoded once, cached in the run
        data.encode_latents(codec.to(info.device), out if info.is_main else None)
        codec.cpu()  # sample grids decode on the CPU
    captions = None
    if inputs.text is not None:
        encoder, texts = inputs.text
        encoder.to(info.device)  # encoding every caption is its heavy use
        captions = CaptionBank(encoder, texts, cache_dir=out if info.is_main else None)
    net.to(info.device)
    process = build_process(cfg.process)
    ema = EMA(net, cfg.ema.halflife_images, cfg.ema.rampup)
    replica = Replica(net, cfg, info)
    if replica.fsdp:  # the average is sharded like the network, so its update stays local
        replica.shard(ema.module)
    fused = info.device.type == "cuda" and not replica.fsdp
    optimizer = torch.optim.AdamW(
        param_groups(net, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps, fused=fused or None
    )
    p = cfg.process
    denoiser = Denoiser(replica.forward_module, process, p.parametrization, sigma_data=p.sigma_data)
    config_record = {
        "format": 1,
        "recipe": to_dict(cfg),
        "network": to_dict(inputs.net_cfg),
        "class_names": data.class_names if inputs.num_classes else [],
    }
    if cfg.train.init:
        config_record["base_model"] = provenance(Path(cfg.train.init).expanduser())
    per_rank = o.batch_size // info.world_size
    logger.info(
        "network %s: %.2fM parameters trained, %.2fM frozen; %d images; %d ranks x %d images/step",
        cfg.model.preset,
        count_parameters(net) / 1e6,
        count_parameters(net, trainable=False) / 1e6,
        len(data),
        info.world_size,
        per_rank,
    )
    shape = data.item_shape  # (C, H, W), or (C, T, H, W) for clips
    return Run(
        cfg, out, info, inputs, captions, process, ema, replica, optimizer, denoiser,
        config_record, per_rank, shape, controls, inpaint,
    )  # fmt: skip
