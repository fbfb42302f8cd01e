"""Inflating an image U-Net into a video U-Net: the video network keeps every weight of the
image network, and its new parts (temporal blocks, frame embeddings, first-frame input
channels) keep their zero initialisation, so at the start it is the image network applied to
each frame (Blattmann et al. 2023, "Align your Latents", sec. 3.1; Singer et al. 2022,
"Make-A-Video", sec. 3.2).

    video_cfg = dataclasses.replace(image_net.config, temporal=True, max_frames=16)
    video_net = UNet(video_cfg)
    inflate(image_net.state_dict(), image_net.config, video_net)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor

from diffuse.nets.unet import UNet, UNetConfig

__all__ = ["VIDEO_FIELDS", "inflate", "video_config", "video_parameter"]

#: The UNetConfig fields in which a video network may differ from the image network it
#: inflates.
VIDEO_FIELDS = ("temporal", "max_frames", "temporal_kernel", "first_frame")


def video_config(image: UNetConfig, **video: object) -> UNetConfig:
    """The config of the video network inflated from an image network's config.

    Args:
        image: the image U-Net's config (temporal = false).
        video: VIDEO_FIELDS to set; temporal is set to True.
    Raises:
        ValueError: `image` is already a video network, or a field outside VIDEO_FIELDS.
    """
    if image.temporal:
        raise ValueError("the network to inflate is already a video network (temporal = true)")
    bad = sorted(set(video) - set(VIDEO_FIELDS))
    if bad:
        raise ValueError(f"inflation changes only {', '.join(VIDEO_FIELDS)}; got {bad}")
    return dataclasses.replace(image, **{**video, "temporal": True})


def inflate(state: Mapping[str, Tensor], image: UNetConfig, net: UNet) -> None:
    """Copy an image U-Net's weights into the video U-Net `net` in place.

    Args:
        state: the image network's state dict.
        image: its config; `net.config` must equal it up to VIDEO_FIELDS.
        net: a freshly built video U-Net (its new parts still zero).
    Raises:
        ValueError: the two networks differ elsewhere (each field named), or the state dict
            does not fit.
    """
    cfg = net.config
    if not cfg.temporal:
        raise ValueError("inflate needs a video U-Net (temporal = true) to copy into")
    same = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    differ = [
        f"{name}: {getattr(image, name)!r} there, {value!r} here"
        for name, value in same.items()
        if name not in VIDEO_FIELDS and getattr(image, name) != value
    ]
    if differ or image.temporal:
        raise ValueError(
            "cannot inflate: the image network differs from the video network's config ("
            + "; ".join(differ or ["it is already a video network"])
            + ")"
        )
    own = net.state_dict()
    state = dict(state)
    weight = state.get("conv_in.weight")
    extra = cfg.first_frame_channels
    if weight is not None and extra:
        # The first-frame channels read nothing at first: zero input weights.
        pad = weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])
        state["conv_in.weight"] = torch.cat([weight, pad], dim=1)
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not video_parameter(k))
    if unexpected or missing:
        raise ValueError(
            f"cannot inflate: state dict does not fit (unexpected {unexpected[:4]}, missing "
            f"{missing[:4]})"
        )
    net.load_state_dict(state, strict=False)


def video_parameter(key: str) -> bool:
    """True for the parameters (state dict keys) only a video U-Net has."""
    return ".temporal." in key or key.startswith(("mid_temporal.", "frame_embed."))
