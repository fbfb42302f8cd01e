"""Training-free inpainting: keep a known region while any sampler fills the rest.

`KnownRegion` is a sampler callback (samplers/base.py, `Callback`): after every step it pastes
the known content, brought to the level the sample now sits at, over the region the mask keeps:

    x <- m * x + (1 - m) * (known + level * eps),

with m = 1 where the content is generated and 0 where it is known, and eps a fixed standard
normal draw per sample (the noise the known region started with, so that region follows the
straight line the ODE of a point mass would). After the last step (level 0) the known region is
exactly `known`. This is the replacement method of Song et al. 2021 (score SDE, appendix G) and
of RePaint's known branch (Lugmayr et al. 2022, eq. 8), and works for every sampler.

`repaint` adds RePaint's resampling: each step is taken `resample` times, going back up the
level axis with fresh noise in between (jump length 1), so that the generated region can
harmonise with the pasted one.
"""

from __future__ import annotations

import math

from torch import Tensor

from diffuse.samplers.base import (
    Callback,
    DenoiseFn,
    NoiseFn,
    StepInfo,
    check_fraction,
    check_inputs,
    default_noise,
    emit,
)
from diffuse.samplers.ode import level_tensor

__all__ = ["KnownRegion", "check_mask", "repaint"]


def check_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A mask that broadcasts against `like`, checked to be binary (0 keep, 1 generate).

    Args:
        mask: [B or 1, 1 or C, H, W] (or any shape broadcasting to like's), values 0 or 1.
        like: the sample [B, C, H, W].
    Returns:
        the mask in like's dtype and device.
    Raises:
        ValueError: a shape that does not broadcast, or values other than 0 and 1.
    """
    try:
        shape = (mask * like[:1]).shape[1:]
    except RuntimeError:
        shape = None
    if mask.ndim != like.ndim or shape != like.shape[1:] or mask.shape[0] not in (1, like.shape[0]):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit samples of shape {tuple(like.shape)}"
        )
    values = mask.unique()
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(f"mask must hold only 0 and 1, got values {values[:6].tolist()}")
    return mask.to(dtype=like.dtype, device=like.device)


class KnownRegion:
    """A sampler callback that re-imposes the known region at the current level.

    Args:
        known: the clean content [B, C, H, W] (latents of a latent model); only its region
            where mask == 0 matters.
        mask: 1 where the sampler generates, 0 where `known` is kept (see `check_mask`).
        eps: the fixed noise of the known region [B, C, H, W].
        then: another callback called first (e.g. a progress bar); a tensor it returns is the
            sample the region is pasted into.
    """

    def __init__(self, known: Tensor, mask: Tensor, eps: Tensor, then: Callback | None = None):
        self.mask = check_mask(mask, known)
        if eps.shape != known.shape:
            raise ValueError(f"eps shape {tuple(eps.shape)} != known shape {tuple(known.shape)}")
        self.known, self.eps, self.then = known, eps, then

    def at(self, level: float) -> Tensor:
        """The known content brought to `level`: known + level * eps."""
        return self.known if level == 0.0 else self.known + level * self.eps

    def paste(self, x: Tensor, level: float) -> Tensor:
        """x with the known region replaced by its value at `level`."""
        return self.mask * x + (1.0 - self.mask) * self.at(level)

    def __call__(self, info: StepInfo) -> Tensor:
        x = info.x
        if self.then is not None:
            out = self.then(info)
            if isinstance(out, Tensor):
                x = out
        return self.paste(x, info.level)


def repaint(
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    *,
    region: KnownRegion,
    resample: int = 2,
    callback: Callback | None = None,
    noise: NoiseFn | None = None,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1) on the level axis, with jump length 1.

    Each step from level s to s' is taken `resample` times: a DDPM posterior step (Ho et al.
    2020, eq. 7; `ddpm_ancestral`), then the known region pasted at s' (`region`), and, except
    after the last time, the sample diffused back to s by adding sqrt(s^2 - s'^2) z.
    resample = 1 is ancestral sampling with replacement. Costs `resample` denoiser calls a step.

    Args:
        denoise: denoise(x, level) -> x0 estimate.
        x: the start at levels[0] [B, ...] (its known region is pasted first).
        levels: 1-D float64 decreasing levels ending in 0.
        region: the known content, mask and noise.
        resample: times each step is taken (U in the paper), >= 1.
        callback: called after every step (after the region is pasted); may replace x.
        noise: noise(x) -> standard normal like x (default `torch.randn_like`).
    Returns:
        the final sample [B, ...]; its known region is exactly `region.known`.
    """
    check_fraction("resample", resample, 1.0)
    if int(resample) != resample:
        raise ValueError(f"resample must be an integer >= 1, got {resample!r}")
    sig = check_inputs(x, levels)
    noise = noise or default_noise
    x = region.paste(x, sig[0])
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        for r in range(int(resample)):
            denoised = denoise(x, level_tensor(s))
            if s_next == 0.0:
                x = denoised
            else:
                ratio2 = (s_next / s) ** 2
                x = denoised + ratio2 * (x - denoised) + s_next * math.sqrt(1 - ratio2) * noise(x)
            x = region.paste(x, s_next)
            if r < resample - 1 and s_next > 0.0:
                x = x + math.sqrt(s * s - s_next * s_next) * noise(x)  # back up to level s
            elif r < resample - 1:
                break  # the last step lands on the clean estimate; nothing to resample
        x, _ = emit(callback, i, sig, x, denoised)
    return x
