"""The Denoiser: a raw network plus a noise process becomes denoise(x, level, cond) -> x0.

This is the one place where preconditioning and prediction-type conversion happen
(docs/architecture.md, "The denoiser is the interface"). Samplers, guidance and losses only see
the level axis: x = x0 + level * eps.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffuse.processes.base import NoiseProcess, broadcast_to

Cond = Mapping[str, Tensor] | None


class Parametrization(str, enum.Enum):
    """What the raw network predicts."""

    EPS = "eps"  # the added noise (DDPM)
    X0 = "x0"  # the clean data
    V = "v"  # v = alpha eps - sigma x0 (Salimans & Ho 2022)
    VELOCITY = "velocity"  # flow velocity dx_t/dt = alpha' x0 + sigma' eps (flow matching)
    EDM = "edm"  # EDM preconditioning, F-space target (Karras et al. 2022, eq. 7)

    @classmethod
    def parse(cls, value: str | Parametrization) -> Parametrization:
        """Parametrization from its name, with an error listing the valid names."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown parametrization {value!r}; valid: {names}") from None


@dataclass(frozen=True)
class Coefficients:
    """Per-sample scalars, shaped to broadcast against x, that relate x, raw output and x0.

    x0 = skip * x + out * raw; the raw network sees in_scale * x and c_noise.
    `target(x0, eps)` gives the raw network's regression target.
    """

    in_scale: Tensor
    skip: Tensor
    out: Tensor
    c_noise: Tensor  # [B]

    def to_x0(self, x: Tensor, raw: Tensor) -> Tensor:
        """Clean estimate from the raw output."""
        return self.skip * x + self.out * raw

    def target(self, x: Tensor, x0: Tensor) -> Tensor:
        """The raw output that would give exactly x0 (the training target)."""
        return (x0 - self.skip * x) / self.out


def coefficients(
    process: NoiseProcess,
    parametrization: Parametrization,
    level: Tensor,
    like: Tensor,
    sigma_data: float = 0.5,
) -> Coefficients:
    """Preconditioning coefficients on the level axis, computed in float64.

    With x = x0 + level eps, x_t = alpha x and sigma = alpha level, each parametrisation gives
    x0 as an affine function of x and the raw output:
      eps:      x0 = x - level * eps_hat
      x0:       x0 = x0_hat
      v:        x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)        (Salimans & Ho, eq. 5)
      velocity: x0 = (sigma' x_t - sigma u) / (sigma' alpha - sigma alpha')
      edm:      x0 = c_skip x + c_out F(c_in x)                          (Karras et al., eq. 7)

    Args:
        process: the noise process (gives alpha and the network's c_noise).
        parametrization: what the network predicts.
        level: per-sample noise levels [B].
        like: a tensor [B, ...] whose shape and dtype the coefficients broadcast to.
        sigma_data: data std for EDM preconditioning.
    """
    level = level.to(device="cpu", dtype=torch.float64)  # [B]; tiny, so computed on the CPU
    t = process.t_from_level(level)
    alpha = process.alpha_from_level(level)
    sigma = alpha * level
    one = torch.ones_like(level)
    if parametrization is Parametrization.EDM:
        norm = level**2 + sigma_data**2
        in_scale = torch.rsqrt(norm)
        skip = sigma_data**2 / norm
        out = level * sigma_data * torch.rsqrt(norm)
        c_noise = torch.log(level) / 4
    else:
        in_scale = alpha
        c_noise = process.c_noise(t)
        if parametrization is Parametrization.EPS:
            skip, out = one, -level
        elif parametrization is Parametrization.X0:
            skip, out = 0 * one, one
        elif parametrization is Parametrization.V:
            norm = alpha**2 + sigma**2
            skip, out = alpha**2 / norm, -sigma / norm
        elif parametrization is Parametrization.VELOCITY:
            d_alpha, d_sigma = process.alpha_sigma_derivatives(t)
            det = d_sigma * alpha - sigma * d_alpha
            skip, out = d_sigma * alpha / det, -sigma / det
        else:  # pragma: no cover - the enum is exhaustive
            raise ValueError(f"unhandled parametrization {parametrization}")

    def shaped(v: Tensor) -> Tensor:
        return broadcast_to(v.to(like.dtype), like)

    return Coefficients(
        in_scale=shaped(in_scale),
        skip=shaped(skip),
        out=shaped(out),
        c_noise=c_noise.to(device=like.device, dtype=like.dtype),
    )


def natural_x0_weight(coeffs: Coefficients) -> Tensor:
    """Weight of the squared x0 error that the plain raw-output MSE implies: 1 / out^2."""
    return 1.0 / coeffs.out**2


EXTRA_INPUTS = "extra_inputs"
"""The cond key of input channels concatenated to the network's input (`Denoiser.raw`)."""


def inpainting_inputs(x0: Tensor, mask: Tensor) -> Tensor:
    """An inpainting model's extra inputs: the mask, then the image with the masked region
    zeroed (Rombach et al. 2022, sec. 4.5: mask and masked image as input channels).

    Args:
        x0: the clean image (latents of a latent model) [B, C, H, W].
        mask: [B or 1, 1, H, W], 1 where the model generates.
    Returns:
        [B, 1 + C, H, W], the cond entry EXTRA_INPUTS.
    """
    mask = mask.to(x0.dtype).expand(x0.shape[0], 1, *x0.shape[2:])
    return torch.cat([mask, x0 * (1 - mask)], dim=1)


class Denoiser(nn.Module):
    """Wrap a raw network as denoise(x, level, cond) -> x0 estimate.

    Args:
        net: module called as net(x_in, c_noise, **cond) -> raw output shaped like x.
        process: the noise process the network was trained with.
        parametrization: what the network predicts.
        sigma_data: data std, used by EDM preconditioning.
    """

    def __init__(
        self,
        net: nn.Module,
        process: NoiseProcess,
        parametrization: Parametrization | str = Parametrization.EPS,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        self.net = net
        self.process = process
        self.parametrization = Parametrization.parse(parametrization)
        self.sigma_data = sigma_data

    def coefficients(self, level: Tensor, like: Tensor) -> Coefficients:
        """The preconditioning coefficients for `level` [B], shaped like `like`."""
        return coefficients(self.process, self.parametrization, level, like, self.sigma_data)

    def raw(self, x: Tensor, coeffs: Coefficients, cond: Cond = None) -> Tensor:
        """Run the network on level-axis input x; returns its raw output in x's dtype.

        A cond entry EXTRA_INPUTS [B, E, H, W] (e.g. an inpainting model's mask and masked
        latents) is concatenated to the scaled input along the channels, unscaled: it is
        conditioning, not part of the noisy sample (the network's `extra_in_channels`).
        """
        cond = dict(cond or {})
        x_in = x * coeffs.in_scale
        extra = cond.pop(EXTRA_INPUTS, None)
        if extra is not None:
            x_in = torch.cat([x_in, extra.to(x_in.dtype)], dim=1)
        out = self.net(x_in, coeffs.c_noise, **cond)
        return out.to(x.dtype)

    def forward(self, x: Tensor, level: Tensor | float, cond: Cond = None) -> Tensor:
        """Denoise x at noise level `level`.

        Args:
            x: noisy input on the level axis [B, ...] (x = x0 + level * eps).
            level: noise level, a scalar or [B]; must be > 0.
            cond: keyword conditioning for the network (class_labels, context, ...).
        Returns:
            the x0 estimate [B, ...].
        """
        level = per_sample_levels(level, x)
        coeffs = self.coefficients(level, x)
        return coeffs.to_x0(x, self.raw(x, coeffs, cond))


def per_sample_levels(level: Tensor | float, x: Tensor) -> Tensor:
    """Expand a scalar or [B] noise level to a validated float64 [B] tensor on the CPU.

    Levels come from a CPU schedule, so checking them here costs no device synchronisation.
    """
    level = torch.as_tensor(level, dtype=torch.float64).cpu()
    if level.ndim == 0:
        level = level.expand(x.shape[0])
    if level.shape != (x.shape[0],):
        shape = tuple(level.shape)
        raise ValueError(f"level must be a scalar or shape [{x.shape[0]}], got shape {shape}")
    if not bool(torch.all(level > 0)):
        raise ValueError(f"noise levels must be > 0, got min {float(level.min())}")
    return level
