"""Raw denoiser networks: they map (x, c_noise, conditioning) to an output and know nothing
about noise processes. The `Denoiser` wrapper elsewhere turns them into x0 estimates.

    from diffuse import nets
    cfg = nets.get_config("unet-cifar")           # a frozen UNetConfig
    net = nets.build_network(cfg)
    nets.io.save_network(net, "out/model")        # safetensors + config.json
"""

from __future__ import annotations

from torch import nn

from diffuse.nets import io
from diffuse.nets.dit import PRESETS as DIT_PRESETS
from diffuse.nets.dit import DiT, DiTConfig, DiTControl, dit_preset
from diffuse.nets.unet import PRESETS as UNET_PRESETS
from diffuse.nets.unet import UNet, UNetConfig, UNetControl, unet_preset

__all__ = [
    "PRESETS",
    "DiT",
    "DiTConfig",
    "DiTControl",
    "NetConfig",
    "UNet",
    "UNetConfig",
    "UNetControl",
    "build_network",
    "dit_preset",
    "get_config",
    "io",
    "unet_preset",
]

NetConfig = UNetConfig | DiTConfig

#: Every named network config, U-Nets and DiTs together.
PRESETS: dict[str, NetConfig] = {**UNET_PRESETS, **DIT_PRESETS}


def get_config(name: str) -> NetConfig:
    """The config of a named preset.

    Raises:
        ValueError: unknown name, listing the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_network(config: NetConfig) -> nn.Module:
    """Instantiate the network a config describes (weights initialised).

    Raises:
        TypeError: not a network config.
    """
    if isinstance(config, UNetConfig):
        return UNet(config)
    if isinstance(config, DiTConfig):
        return DiT(config)
    raise TypeError(f"expected a UNetConfig or DiTConfig, got {type(config).__name__}")
