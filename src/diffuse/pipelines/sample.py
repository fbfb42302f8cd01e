"""Sampling a trained class-conditional (or unconditional) pixel model: grids by seed.

A trained model folder (what `diffuse train` leaves in RUN/model/) is loaded by
`diffuse.model_folder.load_model` (`load_trained` here is the same function). This module runs
a sampler from `diffuse.samplers` on it, with classifier-free guidance from `diffuse.guidance`;
it adds no sampling logic of its own.

    model = load_trained("runs/mnist/model")
    images = generate(model.denoiser, model.shape, seeds=range(16), labels=[7] * 16,
                      null_label=model.null_label, guidance=2.0)
    save_grid(model.decode(images), "sevens.png", nrow=4)
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffuse.denoiser import Cond, Denoiser
from diffuse.guidance import CondDenoiseFn, expand_cond
from diffuse.guidance import cfg as guided
from diffuse.model_folder import TrainedModel, load_model
from diffuse.nets.layers import constant_context, invariant_batch_size, pad_batch
from diffuse.pngmeta import save_png
from diffuse.processes.base import NoiseProcess
from diffuse.samplers.base import Callback, DenoiseFn, StepInfo
from diffuse.samplers.bespoke import BespokeCoefficients, bespoke
from diffuse.samplers.noise import SeededNoise
from diffuse.samplers.registry import get_sampler, get_schedule

__all__ = [
    "TrainedModel",
    "batch_denoise",
    "eval_mode",
    "generate",
    "load_trained",
    "save_grid",
    "to_grid",
    "to_uint8",
]

# Loading lives with the folder format; these names stay for existing callers.
load_trained = load_model


def _rows(cond: Cond, start: int, stop: int) -> Cond:
    """Rows start:stop of a batched conditioning (a batch of 1 is shared by every row)."""
    if cond is None:
        return None
    return {k: v if v.shape[0] == 1 else v[start:stop] for k, v in cond.items()}


def invariant_network(denoiser: Denoiser) -> CondDenoiseFn:
    """denoiser(x, level, cond) with the rows padded as `nets.layers.batch_invariant` pads them:
    the same seed gives the same pixels in any batch (the network sees whole samples per
    thread), so rows from many requests may share a call."""

    def network(x: Tensor, level: Tensor, cond: Cond = None) -> Tensor:
        rows = x.shape[0]
        padded = invariant_batch_size(rows, x.device)
        level = torch.as_tensor(level)
        if level.ndim:
            level = pad_batch(level, padded)
        cond = None if cond is None else {k: pad_batch(v, padded) for k, v in cond.items()}
        return denoiser(pad_batch(x, padded), level, cond)[:rows]

    return network


def batch_denoise(
    network: CondDenoiseFn,
    cond: Cond,
    uncond: Cond,
    guidance: float,
    start: int,
    count: int,
    guidance_rescale: float = 0.0,
) -> DenoiseFn:
    """The denoise function a sampler gets for rows start:start+count of a request:
    classifier-free guidance when `cond` is given and guidance != 1.

    Args:
        network: network(x, level, cond) -> x0 estimate (e.g. `invariant_network(denoiser)`).
        cond, uncond: batched conditioning (batch N or 1), as in `generate`.
        guidance: classifier-free guidance scale (1: none).
        start, count: the rows of this batch.
        guidance_rescale: phi of guidance rescale (0: off).
    Returns:
        denoise(x [count, ...], level) -> x0 estimate [count, ...].
    """
    c = _rows(cond, start, start + count)
    if c is not None and guidance != 1.0:
        u = _rows(uncond, start, start + count)
        return guided(network, c, u, guidance, rescale=guidance_rescale)

    def denoise(x: Tensor, level: Tensor) -> Tensor:
        return network(x, level, expand_cond(c, x.shape[0]))

    return denoise


def stop_at_final_level(
    sample_fn: Callable[..., Tensor],
    denoise: DenoiseFn,
    x: Tensor,
    levels: Tensor,
    process: NoiseProcess,
    noise: SeededNoise,
    callback: Callback | None,
) -> Tensor:
    """Run a sampler, but end at `process.final_level` instead of 0 and return that sample in
    the process's own scale, alpha * x (diffusers' DDIM with `set_alpha_to_one=False`).

    The last step, from level s (sample x_s) with the last estimate D, goes along DDIM's
    direction to the final level f instead of to 0: x_f = D + f (x_s - D) / s (Song et al.
    2021, eq. 12 with the final alpha of timestep 0), then x_t = alpha(f) x_f.
    """
    samples = [x]  # the sample before the latest step, then after it
    estimate: list[Tensor] = []

    def record(info: StepInfo) -> object:
        result = None if callback is None else callback(info)
        samples[:] = [samples[-1], result if isinstance(result, Tensor) else info.x]
        estimate[:] = [info.denoised]
        return result

    sample_fn(denoise, x, levels, noise=noise, callback=record)
    s, f = float(levels[-2]), process.final_level
    x_s, d = samples[0], estimate[0]
    x_f = x_s if f >= s else d + (f / s) * (x_s - d)
    return x_f * process.alpha_from_level(torch.tensor(f, dtype=torch.float64)).item()


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    shape: Sequence[int],
    seeds: Sequence[int],
    *,
    labels: Sequence[int] | None = None,
    null_label: int | None = None,
    cond: Cond = None,
    uncond: Cond = None,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    steps: int = 25,
    guidance: float = 1.0,
    guidance_rescale: float = 0.0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    callback: Callback | None = None,
    network: CondDenoiseFn | None = None,
    solver: BespokeCoefficients | None = None,
) -> Tensor:
    """Sample one image per seed, optionally conditional with classifier-free guidance.

    Args:
        denoiser: the model.
        shape: (C, H, W) of one image.
        seeds: one seed per image.
        labels: class per image (sets `cond` and `uncond` from `null_label`).
        null_label: the network's "no class" index, needed when guidance != 1.
        cond: any other conditioning (e.g. text: context, context_mask, pooled), batch N or 1.
        uncond: the unconditional or negative conditioning, batch N or 1; needed when
            guidance != 1 and `cond` is given.
        sampler, schedule: names known to `diffuse.samplers`.
        steps: sampler steps.
        guidance: classifier-free guidance scale (1: none).
        guidance_rescale: phi of guidance rescale (0: off).
        device: where the network runs.
        batch_size: images per sampler call (results do not depend on it).
        callback: called after each step of each batch with the sampler's `StepInfo`.
        network: network(x, level, cond) -> x0 estimate, what runs the denoiser on the rows the
            sampler and guidance ask for (default: the denoiser itself, batch-invariant, see
            `invariant_network`); a server passes one that batches calls across requests.
        solver: a fitted bespoke solver (`diffuse.fitted_solvers`) to run instead of
            `sampler` and `schedule`, on its own levels; `steps` must be its step count.
    Returns:
        samples [N, C, H, W] (float32, CPU), unclamped: latents of a latent model, which
        range beyond [-1, 1], or pixels; `TrainedModel.decode` turns either into images.
    """

    seeds = [int(s) for s in seeds]
    if labels is not None:
        if len(labels) != len(seeds):
            raise ValueError(f"{len(labels)} labels for {len(seeds)} seeds")
        if cond is not None:
            raise ValueError("give labels or cond, not both")
        cond = {"class_labels": torch.tensor([int(v) for v in labels], device=device)}
        if guidance != 1.0:
            if null_label is None:
                raise ValueError("guidance needs the null label of the model")
            uncond = {"class_labels": torch.full((1,), int(null_label), device=device)}
    if cond is not None and guidance != 1.0 and uncond is None:
        raise ValueError("guidance needs an unconditional input (uncond)")
    if not steps >= 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if solver is not None:
        if len(solver.a) != steps:
            raise ValueError(f"the solver has {len(solver.a)} steps, not {steps}")
        sample_fn = functools.partial(bespoke, coefficients=solver)
        levels = torch.tensor(solver.levels, dtype=torch.float64)
    else:
        sample_fn = get_sampler(sampler)
        levels = get_schedule(schedule)(denoiser.process, steps)
    network = network or invariant_network(denoiser)
    process = denoiser.process
    outputs = []
    with eval_mode(denoiser):
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            noise = SeededNoise(chunk, device=device)  # per-sample streams (stochastic samplers)
            x = noise.initial(shape) * process.initial_std(float(levels[0]))
            denoise = batch_denoise(
                network, cond, uncond, guidance, start, len(chunk), guidance_rescale
            )
            with constant_context():  # text keys and values projected once per run
                if process.final_level > 0.0:
                    out = stop_at_final_level(
                        sample_fn, denoise, x, levels, process, noise, callback
                    )
                else:
                    out = sample_fn(denoise, x, levels, noise=noise, callback=callback)
            outputs.append(out.float().cpu())
    return torch.cat(outputs)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """`module` in eval mode inside the block and back to `module.training` after it (as
    `module.eval()`, then `module.train(was_training)`). A module whose every submodule is in
    eval mode already is left alone: setting the mode walks every submodule, a few
    milliseconds that a server would pay per request."""
    if not any(m.training for m in module.modules()):
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def to_uint8(images: Tensor) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] -> uint8 pixels [N, H, W, C] (round to nearest)."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def to_grid(images: Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """Tile images [N, C, H, W] in [-1, 1] into one uint8 picture [rows, cols, C]."""
    n, c, h, w = images.shape
    ncol = max(1, nrow)
    nrows = math.ceil(n / ncol)
    grid = np.zeros((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), np.uint8)
    pixels = to_uint8(images)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def save_grid(
    images: Tensor,
    path: str | Path,
    nrow: int = 8,
    params: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write images [N, C, H, W] in [-1, 1] as a PNG grid (atomically, parameters embedded;
    an existing file is an error unless `overwrite`)."""

    grid = to_grid(images, nrow)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return save_png(picture, path, params or {}, overwrite=overwrite)
