"""A KL-regularised autoencoder (Rombach et al. 2022, "latent diffusion", section 3) as a codec.

The encoder maps images [B, C, H, W] in [-1, 1] to a diagonal Gaussian over latents
[B, z, H/f, W/f]; the decoder maps latents back. The codec's `encode` returns normalised
latents (z - shift) / scale, with scale and shift fitted on data (`fit_latent_stats`) and saved
with the weights, so the denoiser sees unit-variance latents; `decode` undoes it.

Decoding is bounded in memory two ways: a batch goes through the decoder in slices of
`decode_batch` latents, and a latent wider or taller than `tile_size` is decoded in overlapping
tiles blended linearly across the overlap (attention and normalisation then see one tile, as in
the tiled decoders of other latent-diffusion toolkits), so the peak memory depends on the tile,
not on the image.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from diffuse.io import (
    MissingModelFileError,
    ModelFileError,
    atomic_path,
    atomic_write_text,
    load_safetensors,
)
from diffuse.nets.layers import SelfAttention, batch_invariant

VAE_WEIGHTS_FILE = "vae.safetensors"
VAE_CONFIG_FILE = "vae.json"  # config and latent statistics


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of the autoencoder.

    Args:
        in_channels: image channels.
        latent_channels: channels of the latent (4 to 16).
        downsample: spatial factor f (4 or 8): one 2x step per level beyond the first.
        base_channels: width of the full-resolution level.
        channel_mult: width multipliers per level; len(channel_mult) = log2(f) + 1.
        num_res_blocks: residual blocks per level.
        bottleneck_attention: self-attention in the middle of encoder and decoder.
        num_groups: GroupNorm groups.
    """

    in_channels: int = 3
    latent_channels: int = 4
    downsample: int = 4
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    bottleneck_attention: bool = True
    num_groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if self.downsample not in (4, 8):
            raise ValueError(f"downsample must be 4 or 8, got {self.downsample}")
        if not 4 <= self.latent_channels <= 16:
            raise ValueError(f"latent_channels must be in 4..16, got {self.latent_channels}")
        levels = int(math.log2(self.downsample)) + 1
        if len(self.channel_mult) != levels:
            raise ValueError(
                f"channel_mult {self.channel_mult} needs {levels} entries for downsample "
                f"{self.downsample}"
            )
        for mult in self.channel_mult:
            if (self.base_channels * mult) % self.num_groups:
                raise ValueError(
                    f"width {self.base_channels * mult} is not divisible by num_groups="
                    f"{self.num_groups}"
                )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")


VAE_PRESETS: dict[str, VAEConfig] = {
    "vae-f4": VAEConfig(latent_channels=4, downsample=4),
    "vae-f8": VAEConfig(latent_channels=8, downsample=8, channel_mult=(1, 2, 2, 4)),
}


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with a residual (1x1 conv when widths differ)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Bottleneck(nn.Module):
    """ResBlock, optional self-attention over all positions, ResBlock."""

    def __init__(self, ch: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.res1 = ResBlock(ch, ch, groups)
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6) if attention else None
        self.attn = SelfAttention(ch, 1) if attention else None
        self.res2 = ResBlock(ch, ch, groups)

    def forward(self, x: Tensor) -> Tensor:
        x = self.res1(x)
        if self.attn is not None:
            b, c, h, w = x.shape
            tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
            x = x + self.attn(tokens).transpose(1, 2).reshape(b, c, h, w)
        return self.res2(x)


class Encoder(nn.Module):
    """Images [B, C, H, W] -> Gaussian parameters [B, 2 z, H/f, W/f] (mean, log-variance)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        blocks: list[nn.Module] = []
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, width, cfg.num_groups))
                ch = width
            if level < len(widths) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.mid = Bottleneck(ch, cfg.num_groups, cfg.bottleneck_attention)
        self.norm_out = nn.GroupNorm(cfg.num_groups, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents [B, z, H/f, W/f] -> images [B, C, H, W] (unbounded; ~[-1, 1] when trained)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult][::-1]
        ch = widths[0]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = Bottleneck(ch, cfg.num_groups, cfg.bottleneck_attention)
        blocks: list[nn.Module] = []
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, width, cfg.num_groups))
                ch = width
            if level < len(widths) - 1:
                blocks.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                blocks.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(cfg.num_groups, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class Posterior:
    """Diagonal Gaussian q(z | x) with mean and log-variance [B, z, h, w]."""

    mean: Tensor
    logvar: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample mean + std * eps."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * eps.to(self.mean.device)

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample [B], summed over latent elements."""
        kl = 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(dim=1)


@dataclass
class LatentStats:
    """Per-channel shift and scale that make latents zero-mean, unit-variance."""

    shift: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)


class VAE(nn.Module):
    """The autoencoder plus its latent normalisation; a codec with encode/decode.

    Args:
        cfg: architecture.
        stats: latent shift/scale (identity until `fit_latent_stats` is run).
        decode_batch: decode at most this many latents at once (slicing bounds memory).
        tile_size: latent side above which `decode` works in tiles of this side (0: never).
        tile_overlap: latent pixels shared by neighbouring tiles (blended across).
    """

    def __init__(
        self,
        cfg: VAEConfig,
        stats: LatentStats | None = None,
        decode_batch: int = 16,
        tile_size: int = 32,
        tile_overlap: int = 8,
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.decode_batch = decode_batch
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        z = cfg.latent_channels
        stats = stats or LatentStats([0.0] * z, [1.0] * z)
        self.register_buffer("latent_shift", torch.tensor(stats.shift).reshape(1, z, 1, 1))
        self.register_buffer("latent_scale", torch.tensor(stats.scale).reshape(1, z, 1, 1))

    @property
    def downsample(self) -> int:
        """Spatial down-sampling factor f."""
        return self.cfg.downsample

    @property
    def channels(self) -> int:
        """Latent channels."""
        return self.cfg.latent_channels

    @property
    def image_channels(self) -> int:
        """Channels of the images it encodes."""
        return self.cfg.in_channels

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(z, H/f, W/f) for a square image of side `image_size` (must be divisible by f)."""
        if image_size % self.downsample:
            raise ValueError(
                f"image size {image_size} is not divisible by the codec's factor {self.downsample}"
            )
        return (self.channels, image_size // self.downsample, image_size // self.downsample)

    def posterior(self, images: Tensor) -> Posterior:
        """q(z | images) before normalisation."""
        self._check(images, self.cfg.in_channels, "images", self.downsample)
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return Posterior(mean, logvar.clamp(-30.0, 20.0))

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Normalised latents of images [B, C, H, W] in [-1, 1] (posterior mean if no generator)."""
        post = self.posterior(images)
        z = post.mean if generator is None else post.sample(generator)
        return (z - self.latent_shift) / self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:
        """Images [B, C, H, W] from normalised latents, in slices of `decode_batch` and, for a
        latent larger than `tile_size`, in overlapping tiles."""
        self._check(latents, self.cfg.latent_channels, "latents", 1)
        if self.tile_size and not 0 <= self.tile_overlap < self.tile_size:
            raise ValueError(
                f"tile_overlap must be in [0, tile_size={self.tile_size}), got {self.tile_overlap}"
            )
        z = latents * self.latent_scale + self.latent_shift
        tiled = self.tile_size and max(z.shape[-2:]) > self.tile_size
        run = self._decode_tiled if tiled else self.decoder
        chunks = z.split(max(1, self.decode_batch))
        return torch.cat([batch_invariant(run, chunk) for chunk in chunks])

    def _decode_tiled(self, z: Tensor) -> Tensor:
        """Decode unnormalised latents tile by tile; each output pixel is the weighted mean of
        the tiles that cover it, the weight ramping linearly up from each inner tile edge."""
        f = self.downsample
        rows = _tile_starts(z.shape[-2], self.tile_size, self.tile_overlap)
        cols = _tile_starts(z.shape[-1], self.tile_size, self.tile_overlap)
        th, tw = min(self.tile_size, z.shape[-2]), min(self.tile_size, z.shape[-1])
        wy = _blend_ramp(th * f, self.tile_overlap * f, z.dtype, z.device)
        wx = _blend_ramp(tw * f, self.tile_overlap * f, z.dtype, z.device)
        out = weight = None
        for r in rows:
            for c in cols:
                tile = self.decoder(z[..., r : r + th, c : c + tw])
                if out is None:
                    shape = (*tile.shape[:2], z.shape[-2] * f, z.shape[-1] * f)
                    out = tile.new_zeros(shape)
                    weight = tile.new_zeros(shape[-2:])
                w = wy[:, None] * wx[None, :]
                out[..., r * f : (r + th) * f, c * f : (c + tw) * f] += tile * w
                weight[r * f : (r + th) * f, c * f : (c + tw) * f] += w
        return out / weight

    @staticmethod
    def _check(x: Tensor, channels: int, what: str, multiple: int) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{what} must be [B, {channels}, H, W], got {tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(f"{what} size {tuple(x.shape[2:])} is not divisible by {multiple}")

    @torch.no_grad()
    def fit_latent_stats(self, images: Tensor, batch_size: int = 64) -> LatentStats:
        """Set per-channel shift/scale from the posterior means of `images` and return them."""
        self.latent_shift.zero_()
        self.latent_scale.fill_(1.0)
        latents = torch.cat([self.encode(chunk) for chunk in images.split(batch_size)])
        mean = latents.mean(dim=(0, 2, 3))
        std = latents.std(dim=(0, 2, 3)).clamp(min=1e-6)
        self.latent_shift.copy_(mean.reshape(self.latent_shift.shape))
        self.latent_scale.copy_(std.reshape(self.latent_scale.shape))
        return self.stats()

    def stats(self) -> LatentStats:
        """The current latent normalisation."""
        return LatentStats(
            self.latent_shift.flatten().tolist(), self.latent_scale.flatten().tolist()
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None):
        """Reconstruct: returns (reconstruction, posterior)."""
        post = self.posterior(images)
        return self.decoder(post.sample(generator)), post


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, length), neighbours sharing at least
    `overlap`; the last tile ends at `length`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _blend_ramp(length: int, ramp: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Weights over a tile side: rising linearly over `ramp` pixels at both ends, 1 inside,
    never 0 (a pixel covered by one tile keeps that tile's value exactly)."""
    k = torch.arange(length, dtype=dtype, device=device) + 0.5
    if ramp <= 0:
        return torch.ones_like(k)
    return torch.minimum(torch.minimum(k / ramp, (length - k) / ramp), torch.ones_like(k))


def save_vae(vae: VAE, folder: str | Path) -> Path:
    """Write `vae.safetensors` and `vae.json` (config + latent stats) into `folder`, atomically.

    Args:
        vae: the autoencoder.
        folder: destination (created if needed; other files in it are left alone).
    Returns:
        The folder path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    meta = {"kind": "vae", "config": asdict(vae.cfg), "stats": asdict(vae.stats())}
    with atomic_path(folder / VAE_WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    atomic_write_text(folder / VAE_CONFIG_FILE, json.dumps(meta, indent=2))
    return folder


def load_vae(folder: str | Path) -> VAE:
    """Load a VAE written by `save_vae`.

    Args:
        folder: the folder holding vae.json and vae.safetensors.
    Returns:
        The VAE in eval mode, with `source` set to `folder`.
    Raises:
        MissingModelFileError: a file is missing (a FileNotFoundError too; with the path).
        ModelFileError: a damaged, empty, truncated or mismatched file (a ValueError naming the
            file and what is wrong).
    """
    folder = Path(folder)
    meta_path, weights = folder / VAE_CONFIG_FILE, folder / VAE_WEIGHTS_FILE
    for path in (meta_path, weights):
        if not path.is_file():
            raise MissingModelFileError(f"VAE file missing: {path}")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = VAEConfig(**meta["config"])
        stats = LatentStats(**meta["stats"])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{meta_path} is damaged: {err}") from None
    vae = VAE(cfg, stats)
    state = load_safetensors(weights)
    try:
        missing, unexpected = vae.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ModelFileError(f"{weights} does not match its config: {err}") from None
    if missing or unexpected:
        raise ModelFileError(
            f"{weights} does not match its config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    vae.source = folder  # where it came from (model folders copy it, caches key on it)
    return vae.eval()
