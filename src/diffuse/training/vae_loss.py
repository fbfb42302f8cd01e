"""The autoencoder's training loss: L1, a structural term (SSIM), a small KL, and an optional
hinge patch discriminator (Esser et al. 2021; Rombach et al. 2022 train their KL autoencoders
this way)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuse.config import VAELossConfig

__all__ = ["PatchDiscriminator", "VAELoss", "psnr", "ssim"]


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004) per image of [B, C, H, W] in [-1, 1]: [B].

    Gaussian window (11, sigma 1.5), constants for a [0, 1] range, averaged over the valid
    positions and the channels.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] of one shape, got {a.shape}, {b.shape}")
    window = min(window, a.shape[-1], a.shape[-2])
    c = a.shape[1]
    kernel = _gaussian_window(window, sigma).to(a).expand(c, 1, window, window)
    x, y = (a + 1) / 2, (b + 1) / 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy = blur(x * x) - mx * mx, blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image of [B, C, H, W] in [-1, 1] (peak = range 2)."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp(min=1e-12)
    return 10 * torch.log10(4.0 / mse)


class PatchDiscriminator(nn.Module):
    """A small convolutional critic with one logit per patch (PatchGAN, Isola et al. 2017)."""

    def __init__(self, in_channels: int = 3, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_channels
        for i in range(layers):
            out = width * 2**i
            blocks.append(nn.Conv2d(ch, out, 4, stride=2 if i < layers - 1 else 1, padding=1))
            if i:
                blocks.append(nn.GroupNorm(min(8, out), out))
            blocks.append(nn.LeakyReLU(0.2))
            ch = out
        blocks.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class VAELoss(nn.Module):
    """Per-step losses of the autoencoder (and of its discriminator, when switched on)."""

    def __init__(self, cfg: VAELossConfig, in_channels: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.discriminator = PatchDiscriminator(in_channels) if cfg.disc > 0 else None

    def disc_active(self, step: int) -> bool:
        """Whether the adversarial term is on at `step`."""
        return self.discriminator is not None and step >= self.cfg.disc_start

    def autoencoder(
        self, images: Tensor, recon: Tensor, kl: Tensor, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """The autoencoder's loss (mean over the batch) and its parts for logging."""
        cfg = self.cfg
        l1 = (recon - images).abs().flatten(1).mean(1)
        parts = {"l1": l1}
        total = cfg.l1 * l1
        if cfg.ssim:
            structural = 1 - ssim(recon, images)
            total = total + cfg.ssim * structural
            parts["ssim"] = 1 - structural
        latent_elements = kl.new_tensor(float(images[0].numel()))
        total = total + cfg.kl * kl / latent_elements
        parts["kl"] = kl
        if self.disc_active(step):
            adversarial = -self.discriminator(recon).flatten(1).mean(1)
            total = total + cfg.disc * adversarial
            parts["gen"] = adversarial
        return total.mean(), {k: float(v.detach().mean()) for k, v in parts.items()}

    def critic(self, images: Tensor, recon: Tensor) -> Tensor:
        """The discriminator's hinge loss on real images and (detached) reconstructions."""
        real = self.discriminator(images)
        fake = self.discriminator(recon.detach())
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
