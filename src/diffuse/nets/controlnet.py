"""ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
Models"): a trainable copy of a U-Net's encoder that turns a control image into `UNetControl`
residuals for the frozen base.

    control = ControlNet.from_base(base_unet, ControlNetConfig(kind="edges", ...))
    net = ControlledUNet(base_unet, control)          # net(x, c_noise, control=hint, ...)

The copy starts from the base's encoder weights; the control image enters through a small
convolutional hint encoder whose last layer is zero, added after the copy's input convolution
(the paper's section 3.2 "zero convolution" on the condition), and every residual leaves
through a zero-initialised 1x1 convolution, so a fresh ControlNet adds exactly zero: the
controlled network equals the base bit for bit until training moves the zero layers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import Tensor, nn

from diffuse.nets.layers import zero_
from diffuse.nets.unet import EncoderPass, UNet, UNetConfig, UNetControl

__all__ = ["CONTROL_KINDS", "ControlNet", "ControlNetConfig", "ControlledUNet"]

CONTROL_KINDS: dict[str, int] = {"edges": 1, "layout": 4}
"""Control kinds and their channels: an edge map, and a layout (one mask per shape class)."""


@dataclass(frozen=True)
class ControlNetConfig:
    """What a ControlNet is built for.

    Args:
        kind: a key of CONTROL_KINDS.
        factor: control pixels per network pixel (the codec's downsampling; 1 in pixel space).
        hint_channels: width of the hint encoder's first layers.
        unet: the base network's architecture (the copy has the same encoder).
    """

    kind: str
    factor: int
    unet: UNetConfig
    hint_channels: int = 16

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ValueError(
                f"unknown control kind {self.kind!r}; valid: {', '.join(sorted(CONTROL_KINDS))}"
            )
        if self.factor < 1 or self.factor & (self.factor - 1):
            raise ValueError(f"factor must be a power of two >= 1, got {self.factor}")

    @property
    def control_channels(self) -> int:
        """Channels of the control image."""
        return CONTROL_KINDS[self.kind]

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "kind": self.kind,
            "factor": self.factor,
            "hint_channels": self.hint_channels,
            "unet": dataclasses.asdict(self.unet),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ControlNetConfig:
        """Inverse of `to_dict`."""
        return cls(
            kind=data["kind"],
            factor=int(data["factor"]),
            hint_channels=int(data.get("hint_channels", 16)),
            unet=UNetConfig(**data["unet"]),
        )


class ControlNet(EncoderPass, nn.Module):
    """The trainable encoder copy with its hint encoder and zero projections.

    Args:
        config: kind, factor and the base's architecture.
    """

    def __init__(self, config: ControlNetConfig) -> None:
        super().__init__()
        self.config = config
        self.unet_config = config.unet
        copy = UNet(config.unet)
        # Keep the encoder half; the decoder of the copy is never run.
        self.time_embed, self.class_embed = copy.time_embed, copy.class_embed
        self.pooled_embed, self.conv_in = copy.pooled_embed, copy.conv_in
        self.down, self.downsample = copy.down, copy.downsample
        self.mid1, self.mid_attn, self.mid2 = copy.mid1, copy.mid_attn, copy.mid2
        base = config.unet.base_channels
        hint = config.hint_channels
        layers: list[nn.Module] = [nn.Conv2d(config.control_channels, hint, 3, padding=1)]
        for _ in range(int(math.log2(config.factor))):  # down to the network's resolution
            layers += [nn.SiLU(), nn.Conv2d(hint, hint, 3, padding=1, stride=2)]
        layers += [nn.SiLU(), nn.Conv2d(hint, base, 3, padding=1)]
        self.hint = nn.Sequential(*layers)
        skips = config.unet.skip_channels()
        self.skip_out = nn.ModuleList(nn.Conv2d(c, c, 1) for c in skips)
        mid = base * config.unet.channel_mult[-1]
        self.mid_out = nn.Conv2d(mid, mid, 1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The hint encoder's last layer and every output projection are zero (the paper's
        zero convolutions): the residuals start at exactly 0. The encoder copy is set by
        `from_base`."""
        zero_(self.hint[-1])
        for conv in [*self.skip_out, self.mid_out]:
            zero_(conv)

    @classmethod
    def from_base(cls, base: UNet, config: ControlNetConfig) -> ControlNet:
        """A ControlNet whose encoder copy starts from `base`'s encoder weights."""
        if config.unet != base.config:
            raise ValueError("the ControlNet's U-Net config differs from the base network's")
        net = cls(config)
        own = net.state_dict()
        copied = {k: v for k, v in base.state_dict().items() if k in own}
        net.load_state_dict(copied, strict=False)
        return net

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        hint: Tensor,
        *,
        class_labels: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        pooled: Tensor | None = None,
    ) -> UNetControl:
        """Residuals for the base U-Net (the encoder pass of `UNet.forward` plus the hint).

        Args:
            x: the base network's input (B, C, H, W).
            c_noise: (B,) noise code.
            hint: the control image (B, control_channels, H * factor, W * factor) in [0, 1].
            class_labels, context, context_mask, pooled: the base's conditioning.
        Returns:
            the `UNetControl` for the base network.
        """
        want = (self.config.control_channels, x.shape[-2] * self.config.factor)
        if hint.ndim != 4 or (hint.shape[1], hint.shape[-1]) != want:
            raise ValueError(
                f"control image must be (B, {want[0]}, {want[1]}, {want[1]}) for a "
                f"{self.config.kind!r} ControlNet, got {tuple(hint.shape)}"
            )
        emb = self.embedding(c_noise, class_labels, pooled)
        h = self.conv_in(x) + self.hint(hint.to(x.dtype))
        h, skips = self.encoder(h, emb, context, context_mask)
        h = self.middle(h, emb, context, context_mask)
        return UNetControl(tuple(conv(s) for conv, s in zip(self.skip_out, skips)), self.mid_out(h))


class ControlledUNet(nn.Module):
    """A frozen base U-Net steered by a ControlNet: called like the base, plus `control`.

    Args:
        base: the base network (frozen here).
        controlnet: the ControlNet built for it.
        scale: multiplies every residual; 0 runs the base alone (bit for bit).
        c_noise_range: (low, high): residuals apply only where low <= c_noise <= high (the
            pipeline maps a level interval to it; c_noise grows with the level).
    """

    def __init__(
        self,
        base: UNet,
        controlnet: ControlNet,
        scale: float = 1.0,
        c_noise_range: tuple[float, float] = (-math.inf, math.inf),
    ) -> None:
        super().__init__()
        if controlnet.config.unet != base.config:
            raise ValueError("this ControlNet was built for a network of another architecture")
        if not math.isfinite(scale):
            raise ValueError(f"control scale must be finite, got {scale}")
        self.base = base.requires_grad_(False)
        self.controlnet = controlnet
        self.config = base.config
        self.scale = float(scale)
        self.c_noise_range = c_noise_range

    def forward(
        self, x: Tensor, c_noise: Tensor, *, control: Tensor | None = None, **cond
    ) -> Tensor:
        """The base's output, with the ControlNet's residuals when `control` is given."""
        if control is None or self.scale == 0.0:
            return self.base(x, c_noise, **cond)
        residuals = self.controlnet(x, c_noise, control, **cond)
        low, high = self.c_noise_range
        gate = ((c_noise >= low) & (c_noise <= high)).to(x.dtype) * self.scale  # (B,)

        def gated(r: Tensor) -> Tensor:
            return r * gate.view(-1, *([1] * (r.ndim - 1)))

        steer = UNetControl(tuple(gated(r) for r in residuals.skips), gated(residuals.mid))
        return self.base(x, c_noise, control=steer, **cond)
