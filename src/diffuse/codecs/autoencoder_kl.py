"""Stable Diffusion's KL autoencoder (Rombach et al. 2022, section 3 and appendix G) as a codec.

The layout of the latent-diffusion first stage, which diffusers calls `AutoencoderKL`:

    encoder: conv_in, per level `layers_per_block` residual blocks and (but the last level) a
             stride-2 convolution with one pixel of padding on the right and bottom only;
             middle (residual, single-head attention, residual); GroupNorm-SiLU-conv to
             2 z channels (mean, log-variance); then a 1x1 "quant" convolution.
    decoder: 1x1 "post-quant" convolution, conv_in, middle, per level (widest first)
             `layers_per_block + 1` residual blocks and (but the last) a nearest-2x
             upsampling convolution; GroupNorm-SiLU-conv out.

The codec's latents are (mean - shift) * scale with the model's `scaling_factor` and
`shift_factor` (Stable Diffusion 1.x/2.x: 0.18215 and no shift), so `encode` gives what the
denoiser was trained on and `decode` inverts it. Saved as `vae.json` (kind "autoencoder_kl")
and `vae.safetensors`, the file names of `codecs.vae`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from diffuse.codecs.vae import Bottleneck, ResBlock
from diffuse.io import (
    MissingModelFileError,
    ModelFileError,
    atomic_path,
    atomic_write_text,
    load_safetensors,
)

__all__ = ["KIND", "AutoencoderKL", "AutoencoderKLConfig", "load_autoencoder_kl", "save_codec"]

KIND = "autoencoder_kl"
WEIGHTS_FILE = "vae.safetensors"
CONFIG_FILE = "vae.json"


@dataclass(frozen=True)
class AutoencoderKLConfig:
    """Architecture and latent normalisation of the autoencoder.

    Args:
        in_channels, out_channels: image channels.
        latent_channels: z.
        widths: channels per level (the downsampling factor is 2 ** (len(widths) - 1)).
        layers_per_block: encoder residual blocks per level (the decoder has one more).
        num_groups: GroupNorm groups.
        mid_attention: single-head attention in the middle blocks.
        quant_conv, post_quant_conv: the 1x1 convolutions around the latent.
        scaling_factor, shift_factor: latents = (z - shift) * scale.
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    widths: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    num_groups: int = 32
    mid_attention: bool = True
    quant_conv: bool = True
    post_quant_conv: bool = True
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or self.layers_per_block < 1:
            raise ValueError(
                f"AutoencoderKLConfig needs widths and layers_per_block >= 1, got "
                f"{self.widths}, {self.layers_per_block}"
            )
        bad = [w for w in self.widths if w % self.num_groups]
        if bad:
            raise ValueError(f"num_groups={self.num_groups} does not divide the widths {bad}")
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor must be > 0, got {self.scaling_factor}")


class _Level(nn.Module):
    """Residual blocks and an optional resampling convolution."""

    def __init__(self, blocks: list[ResBlock], resample: nn.Conv2d | None) -> None:
        super().__init__()
        self.res = nn.ModuleList(blocks)
        self.resample = resample


class _Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig) -> None:
        super().__init__()
        w, g = cfg.widths, cfg.num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)
        self.levels = nn.ModuleList()
        ch = w[0]
        for lv, width in enumerate(w):
            blocks = []
            for _ in range(cfg.layers_per_block):
                blocks.append(ResBlock(ch, width, g))
                ch = width
            down = nn.Conv2d(ch, ch, 3, stride=2) if lv < len(w) - 1 else None
            self.levels.append(_Level(blocks, down))
        self.mid = Bottleneck(ch, g, cfg.mid_attention)
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 2 z, H/f, W/f)."""
        h = self.conv_in(x)
        for level in self.levels:
            for block in level.res:
                h = block(h)
            if level.resample is not None:
                # Stride-2 convolution padded by one pixel on the right and bottom only.
                h = level.resample(F.pad(h, (0, 1, 0, 1)))
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class _Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig) -> None:
        super().__init__()
        w, g = cfg.widths[::-1], cfg.num_groups
        ch = w[0]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = Bottleneck(ch, g, cfg.mid_attention)
        self.levels = nn.ModuleList()
        for i, width in enumerate(w):
            blocks = []
            for _ in range(cfg.layers_per_block + 1):
                blocks.append(ResBlock(ch, width, g))
                ch = width
            up = nn.Conv2d(ch, ch, 3, padding=1) if i < len(w) - 1 else None
            self.levels.append(_Level(blocks, up))
        self.norm_out = nn.GroupNorm(g, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """(B, z, h, w) -> (B, C, h f, w f)."""
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            for block in level.res:
                h = block(h)
            if level.resample is not None:
                h = level.resample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """The KL autoencoder as a codec (see the module docstring).

    Args:
        cfg: architecture and latent normalisation.
    """

    def __init__(self, cfg: AutoencoderKLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        z = cfg.latent_channels
        self.encoder = _Encoder(cfg)
        self.decoder = _Decoder(cfg)
        self.quant = nn.Conv2d(2 * z, 2 * z, 1) if cfg.quant_conv else None
        self.post_quant = nn.Conv2d(z, z, 1) if cfg.post_quant_conv else None

    @property
    def channels(self) -> int:
        """Latent channels z."""
        return self.cfg.latent_channels

    @property
    def downsample(self) -> int:
        """Spatial factor f."""
        return 2 ** (len(self.cfg.widths) - 1)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(z, S/f, S/f) of a square image of side `image_size` (divisible by f)."""
        if image_size % self.downsample:
            raise ValueError(
                f"image size {image_size} is not divisible by the codec's factor {self.downsample}"
            )
        side = image_size // self.downsample
        return (self.channels, side, side)

    def _check(self, x: Tensor, channels: int, what: str, multiple: int) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{what} must be [B, {channels}, H, W], got {tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(f"{what} size {tuple(x.shape[2:])} is not divisible by {multiple}")

    def moments(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance (B, z, H/f, W/f) of images in [-1, 1]."""
        self._check(images, self.cfg.in_channels, "images", self.downsample)
        h = self.encoder(images)
        if self.quant is not None:
            h = self.quant(h)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Normalised latents (z - shift) * scale of images; the posterior mean unless a
        generator is given (then a posterior sample)."""
        mean, logvar = self.moments(images)
        z = mean
        if generator is not None:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * eps.to(mean.device)
        return (z - self.cfg.shift_factor) * self.cfg.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """Images (B, C, H, W), about [-1, 1], from normalised latents (B, z, h, w)."""
        self._check(latents, self.channels, "latents", 1)
        z = latents / self.cfg.scaling_factor + self.cfg.shift_factor
        if self.post_quant is not None:
            z = self.post_quant(z)
        return self.decoder(z)


def save_codec(codec: AutoencoderKL, folder: str | Path) -> Path:
    """Write vae.json (kind, config) and vae.safetensors into `folder`, atomically.

    Args:
        codec: the autoencoder.
        folder: destination (created if needed).
    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"kind": KIND})
    meta = {"kind": KIND, "config": asdict(codec.cfg)}
    atomic_write_text(folder / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def load_autoencoder_kl(folder: str | Path) -> AutoencoderKL:
    """Load a codec written by `save_codec`.

    Raises:
        MissingModelFileError: a file is missing.
        ModelFileError: a damaged or mismatched file (naming it).
    """
    folder = Path(folder)
    meta_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (meta_path, weights):
        if not path.is_file():
            raise MissingModelFileError(f"codec file missing: {path}")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = AutoencoderKLConfig(**meta["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{meta_path} is damaged: {err}") from None
    codec = AutoencoderKL(cfg)
    try:
        codec.load_state_dict(load_safetensors(weights))
    except RuntimeError as err:
        raise ModelFileError(f"{weights} does not match its config: {err}") from None
    codec.source = folder
    return codec.eval()
