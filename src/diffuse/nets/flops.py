"""Static facts about a network: parameters, FLOPs per forward pass and training activation
memory, computed on the meta device (no weights are allocated, so even large presets are
instant).

FLOPs are counted by `torch.utils.flop_counter` (2 per multiply-add) with attention evaluated by
SDPA's math backend, so its matrix products are counted too, and with `reference_kernels()`, so
the count describes the architecture (e.g. upsample + 3x3 conv at full cost), as papers count it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from diffuse.nets import build_network
from diffuse.nets.layers import reference_kernels
from diffuse.nets.unet import UNetConfig

__all__ = [
    "NetworkInfo",
    "clip_frames",
    "count_flops",
    "example_inputs",
    "network_info",
    "video_form",
]


@dataclass(frozen=True)
class NetworkInfo:
    """What `diffuse info` prints.

    Attributes:
        name: preset name (or the config class name).
        params: number of parameters.
        gflops: GFLOPs of one forward pass for one sample.
        batch, channels, size: the input the numbers refer to.
        frames: frames per clip of a video network (0: an image network).
        activation_bytes: tensors saved for the backward pass of a training forward of `batch`
            samples in fp32 (the dominant term of training memory).
        weight_bytes: fp32 weights.
        train_state_bytes: fp32 weights, gradients and the two AdamW moments (16 B/param).
    """

    name: str
    params: int
    gflops: float
    batch: int
    channels: int
    size: int
    activation_bytes: int
    weight_bytes: int
    train_state_bytes: int
    frames: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def example_inputs(
    net: nn.Module, batch: int, *, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Inputs matching a network's config: (x, c_noise, cond) with every configured
    conditioning filled in (class labels, 77 text tokens with a mask, pooled embedding).

    Args:
        net: a UNet or DiT.
        batch: batch size.
    Returns:
        x (batch, C, image_size, image_size), c_noise (batch,), cond dict; a video network
        gets clips x (batch, C, frames, image_size, image_size) of its longest length.
    """
    cfg = net.config
    c = cfg.in_channels + cfg.extra_in_channels
    frames = clip_frames(cfg)
    clip = (frames,) if frames else ()
    x = torch.randn(batch, c, *clip, cfg.image_size, cfg.image_size, device=device)
    c_noise = torch.rand(batch, device=device) * 1000
    cond: dict[str, Tensor] = {}
    if cfg.num_classes:
        cond["class_labels"] = torch.randint(0, cfg.num_classes, (batch,), device=device)
    if cfg.context_dim:
        cond["context"] = torch.randn(batch, 77, cfg.context_dim, device=device)
        cond["context_mask"] = torch.ones(batch, 77, dtype=torch.bool, device=device)
    if cfg.pooled_dim:
        cond["pooled"] = torch.randn(batch, cfg.pooled_dim, device=device)
    return x, c_noise, cond


def clip_frames(config: object) -> int:
    """Frames of the longest clip a video network takes (0 for an image network)."""
    if getattr(config, "temporal", False):
        return config.max_frames
    return getattr(config, "frames", 0)


def video_form(config: object, frames: int) -> object:
    """The video network of an image network config: a U-Net inflated with temporal layers,
    a DiT with space-time patches, taking clips of up to `frames` frames.

    Raises:
        ValueError: frames < 1.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if isinstance(config, UNetConfig):
        return dataclasses.replace(config, temporal=True, max_frames=frames)
    return dataclasses.replace(config, frames=frames)


def count_flops(net: nn.Module, x: Tensor, c_noise: Tensor, **cond: Tensor) -> int:
    """FLOPs of `net(x, c_noise, **cond)` (2 per multiply-add), attention and reference
    kernels included (see the module docstring)."""
    with (
        torch.no_grad(),
        reference_kernels(),
        sdpa_kernel([SDPBackend.MATH]),
        FlopCounterMode(display=False) as counter,
    ):
        net(x, c_noise, **cond)
    return int(counter.get_total_flops())


class _FlashAttentionMemory(TorchFunctionMode):
    """On the meta device SDPA runs its math backend, which stores the (N x N) attention
    matrix; real CPU and GPU runs use flash kernels that save only q, k, v, the output and
    one log-sum-exp per row. This mode records exactly that and returns a fresh output."""

    def __init__(self, record: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func is not F.scaled_dot_product_attention:
            return func(*args, **(kwargs or {}))
        q, k, v = args[:3]
        out = torch.empty(*q.shape[:-1], v.shape[-1], device=q.device, dtype=q.dtype)
        out.requires_grad_(q.requires_grad)
        lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
        for t in (q, k, v, out, lse):
            self.record(t)
        return out


def _saved_activation_bytes(net: nn.Module, x: Tensor, c_noise: Tensor, cond: dict) -> int:
    """Bytes of distinct non-parameter tensors autograd saves during a training forward
    (attention counted as a flash kernel stores it)."""
    param_storages = {p.untyped_storage()._cdata for p in net.parameters()}
    seen: dict[int, int] = {}
    keep: list[Tensor] = []  # hold tensors so storage ids are not reused while counting

    def record(t: Tensor) -> Tensor:
        key = t.untyped_storage()._cdata
        if key not in param_storages:
            seen[key] = t.untyped_storage().nbytes()
            keep.append(t)
        return t

    net.train()
    with (
        torch.autograd.graph.saved_tensors_hooks(record, lambda t: t),
        _FlashAttentionMemory(record),
    ):
        out = net(x, c_noise, **cond)
    del out
    keep.clear()
    return sum(seen.values())


def network_info(
    config: object,
    *,
    size: int | None = None,
    channels: int | None = None,
    batch: int = 64,
    name: str | None = None,
    frames: int = 0,
) -> NetworkInfo:
    """Parameters, FLOPs and memory of a network config at an input size.

    Args:
        config: a UNetConfig or DiTConfig.
        size: input side (default: the config's image_size).
        channels: input/output channels (default: the config's).
        batch: batch size for the memory estimate.
        name: label for the report.
        frames: > 0: the numbers of the video form of the network (`video_form`) on clips of
            this many frames (FLOPs per clip).
    Returns:
        A NetworkInfo.
    Raises:
        ValueError: an input the network cannot take (e.g. a size its patches do not divide).
    """

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    changes: dict[str, int] = {}
    if size is not None:
        changes["image_size"] = size
    if channels is not None:
        changes["in_channels"] = changes["out_channels"] = channels
    config = dataclasses.replace(config, **changes)
    if frames:
        config = video_form(config, frames)
    with torch.device("meta"):
        net = build_network(config)
        params = sum(p.numel() for p in net.parameters())
        x, c_noise, cond = example_inputs(net, 1, device="meta")
        flops = count_flops(net, x, c_noise, **cond)
        xb, cb, condb = example_inputs(net, batch, device="meta")
        act = _saved_activation_bytes(net, xb, cb, condb)
    return NetworkInfo(
        name=name or type(config).__name__,
        params=params,
        gflops=flops / 1e9,
        batch=batch,
        channels=config.in_channels,
        size=config.image_size,
        activation_bytes=act,
        weight_bytes=4 * params,
        train_state_bytes=16 * params,
        frames=clip_frames(config),
    )
