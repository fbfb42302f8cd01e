"""Guidance as wrappers: each returns a new denoise(x, level) -> x0 function.

Because guidance wraps the denoise function, every sampler supports every guidance method with
no extra code. Conditioning is a mapping of keyword tensors (class_labels, context, ...) or
None; the conditional and unconditional branches are concatenated along the batch and run in
one network call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffuse.denoiser import Cond, per_sample_levels
from diffuse.processes.base import broadcast_to

CondDenoiseFn = Callable[[Tensor, Tensor, Cond], Tensor]
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def concat_cond(first: Cond, second: Cond) -> Cond:
    """Concatenate two conditioning mappings along the batch dimension, key by key.

    Both must have the same keys; tensors of one key must agree beyond the batch dimension.
    Token sequences of different lengths (text context and its mask) are right-padded to the
    longer one, with the mask marking the padding as absent.
    """
    if first is None and second is None:
        return None
    if first is None or second is None or set(first) != set(second):
        keys_a = sorted(first or {})
        keys_b = sorted(second or {})
        raise ValueError(f"conditional and unconditional inputs differ: keys {keys_a} vs {keys_b}")
    a, b = pad_contexts([first, second])
    return {key: torch.cat([a[key], b[key].to(a[key].device)]) for key in a}


def pad_contexts(parts: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Conditioning mappings whose text contexts differ in length, or of which some carry a
    `context_mask`, right-padded to the longest, each with a `context_mask` marking its padding
    as absent (copies; the inputs are kept). Mappings without a context, or with contexts of one
    length and no mask, come back unchanged."""
    parts = [dict(part) for part in parts]
    if not all("context" in part for part in parts):
        return parts
    length = max(part["context"].shape[1] for part in parts)
    same = all(part["context"].shape[1] == length for part in parts)
    if same and not any("context_mask" in part for part in parts):
        return parts
    for part in parts:
        context = part["context"]  # [B, L, D]
        pad = length - context.shape[1]
        mask = part.get("context_mask")
        if mask is None:
            mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        part["context"] = torch.nn.functional.pad(context, (0, 0, 0, pad))
        part["context_mask"] = torch.nn.functional.pad(mask.bool(), (0, pad), value=False)
    return parts


def expand_cond(cond: Cond, batch: int) -> Cond:
    """Repeat a conditioning of batch 1 to `batch` (a single prompt for many seeds)."""
    if cond is None:
        return None
    out = {}
    for key, value in cond.items():
        if value.shape[0] == batch:
            out[key] = value
        elif value.shape[0] == 1:
            out[key] = value.expand(batch, *value.shape[1:])
        else:
            raise ValueError(f"cond[{key!r}] has batch {value.shape[0]}, expected 1 or {batch}")
    return out


def classifier_free_guidance(
    denoiser: CondDenoiseFn,
    cond: Cond,
    uncond: Cond,
    scale: float,
    *,
    rescale: float = 0.0,
    interval: tuple[float, float] | None = None,
) -> DenoiseFn:
    """Classifier-free guidance (Ho & Salimans 2022) as a denoise function.

    D = D_u + scale (D_c - D_u), computed on the x0 estimates (equivalent to guiding eps or the
    score, since all are affine in D at a fixed x and level). A negative prompt is simply
    `uncond` = the negative conditioning.

    Args:
        denoiser: denoise(x, level, cond) -> x0, e.g. a `Denoiser`.
        cond: conditioning of the wanted output (batch B or 1).
        uncond: unconditional or negative conditioning (batch B or 1).
        scale: guidance scale; 1 means no guidance (one network call), 0 the unconditional
            model; must be >= 0.
        rescale: phi of guidance rescale (Lin et al. 2023, eqs. 15-16), in [0, 1]: the guided
            noise prediction is rescaled to the std of the conditional one, then mixed by phi.
        interval: (level_low, level_high); guidance applies only to levels inside it, elsewhere
            the conditional model alone is used (Kynkaanniemi et al. 2024).
    Returns:
        denoise(x, level) -> guided x0 estimate.
    """
    if not scale >= 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    if interval is not None and not 0 <= interval[0] < interval[1]:
        raise ValueError(f"guidance interval must satisfy 0 <= low < high, got {interval}")

    joined: dict[int, Cond] = {}  # [cond, uncond] by batch: the same tensors at every step

    def guided(x: Tensor, level: Tensor) -> Tensor:
        batch = x.shape[0]
        c, u = expand_cond(cond, batch), expand_cond(uncond, batch)
        level_f = float(torch.as_tensor(level).reshape(-1)[0])
        inside = interval is None or interval[0] <= level_f <= interval[1]
        if scale == 1.0 or not inside:
            return denoiser(x, level, c)
        if scale == 0.0:
            return denoiser(x, level, u)
        if batch not in joined:
            joined[batch] = concat_cond(c, u)
        both = denoiser(torch.cat([x, x]), _repeat_level(level, 2), joined[batch])
        d_cond, d_uncond = both[:batch], both[batch:]
        guided_x0 = d_uncond + scale * (d_cond - d_uncond)
        if rescale > 0:
            guided_x0 = _rescale(x, level, d_cond, guided_x0, rescale)
        return guided_x0

    return guided


cfg = classifier_free_guidance


def _repeat_level(level: Tensor | float, times: int) -> Tensor | float:
    level = torch.as_tensor(level)
    return level if level.ndim == 0 else level.repeat(times)


def _rescale(x: Tensor, level: Tensor, d_cond: Tensor, d_guided: Tensor, phi: float) -> Tensor:
    """Guidance rescale (Lin et al. 2023, eqs. 15-16) applied to the noise predictions.

    eps = (x - D) / level; eps_resc = eps_cfg * std(eps_cond) / std(eps_cfg) per sample;
    eps_final = phi eps_resc + (1 - phi) eps_cfg; converted back to an x0 estimate.
    """
    lev = broadcast_to(per_sample_levels(level, x), x)
    eps_cond = (x - d_cond) / lev
    eps_cfg = (x - d_guided) / lev
    dims = tuple(range(1, x.ndim))
    std_cond = eps_cond.std(dim=dims, keepdim=True)
    std_cfg = eps_cfg.std(dim=dims, keepdim=True).clamp(min=1e-12)
    eps = phi * eps_cfg * (std_cond / std_cfg) + (1 - phi) * eps_cfg
    return x - lev * eps
