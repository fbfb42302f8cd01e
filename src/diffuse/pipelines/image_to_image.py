"""Starting from an image: img2img (SDEdit), inversion, training-free inpainting.

All three are the generation path with another starting point or a constraint (docs/
architecture.md): the input image is encoded by the model's codec (the identity for pixel
models), and any registered sampler then runs on the model's own level axis.

- img2img (Meng et al. 2022, "SDEdit"): strength in (0, 1] picks the starting level between the
  process's level_min and level_max, uniformly in log-level (i.e. in log-SNR):
  level = level_min^(1 - strength) * level_max^strength, so 1 is pure generation and small
  values keep more of the image, the same for every process and schedule. The schedule then
  runs its `steps` steps from that level down (no step of a longer schedule is skipped); the
  start is latents + level * noise, the noise drawn from the sample's own seed.
- inversion: `invert_latents` walks the probability-flow ODE up (samplers/inversion.py);
  sampling from the result with another prompt edits the image.
- inpainting: the known region is pasted back at the current level after every step
  (samplers/inpaint.py, `KnownRegion`), or RePaint's resampling; the decoded result is blended
  with the input in pixel space (see `blend`), so pixels outside the mask are the input's.
  A trained inpainting model (`ModelInfo.inpainting`) instead samples from noise with the
  mask and the masked latents as extra inputs (`inpaint_with_model`), blended the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffuse.denoiser import EXTRA_INPUTS, Cond, Denoiser, inpainting_inputs
from diffuse.guidance import CondDenoiseFn
from diffuse.pipelines.sample import batch_denoise, eval_mode, invariant_network
from diffuse.processes.base import NoiseProcess
from diffuse.samplers.base import Callback
from diffuse.samplers.inpaint import KnownRegion, check_mask, repaint
from diffuse.samplers.inversion import get_inversion
from diffuse.samplers.noise import SeededNoise
from diffuse.samplers.registry import get_sampler, get_schedule

__all__ = [
    "blend",
    "check_strength",
    "edit_latents",
    "image_hash",
    "inpaint_latents",
    "inpaint_with_model",
    "invert_latents",
    "latent_mask",
    "read_image",
    "read_mask",
    "sample_from",
    "start_levels",
    "strength_level",
]


def check_strength(strength: float) -> float:
    """strength as a float in (0, 1]; ValueError naming the value otherwise."""
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
    if not (math.isfinite(strength) and 0.0 < strength <= 1.0):
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    return float(strength)


def check_scale(name: str, value: float) -> float:
    """A guidance scale as a float, finite and >= 0; ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def strength_level(process: NoiseProcess, strength: float) -> float:
    """The starting level of img2img: level_min^(1 - strength) * level_max^strength.

    Args:
        process: the model's noise process (its sampling range).
        strength: in (0, 1]; 1 is the top of the range (pure generation).
    Returns:
        the level, a float in (level_min, level_max].
    """
    strength = check_strength(strength)
    lo, hi = process.level_min, process.level_max
    if strength == 1.0:
        return float(hi)
    return math.exp((1.0 - strength) * math.log(lo) + strength * math.log(hi))


def start_levels(process: NoiseProcess, schedule: str, steps: int, strength: float) -> Tensor:
    """The schedule `schedule` with `steps` steps from `strength_level` down to 0.

    Strength 1 gives exactly the schedule of plain generation. Every schedule starts at the
    strength's level except "leading", which by its definition starts one step below its top
    (as in generation); the image is noised to the schedule's first level.
    """
    level = strength_level(process, strength)
    make = get_schedule(schedule)
    if strength == 1.0:
        return make(process, steps)
    return make(process, steps, level_max=level)


def image_hash(pixels: np.ndarray) -> str:
    """16 hex digits of the sha256 of an image's pixels (uint8 [H, W, C]) and shape."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:16]


def _open(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such {what}: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable image ({err})") from None


def read_image(
    image: str | Path | Image.Image | np.ndarray, size: int, channels: int
) -> tuple[Tensor, np.ndarray]:
    """An input image as a tensor [1, C, H, W] in [-1, 1], and its uint8 pixels [H, W, C].

    Images are never resized: a resize changes every pixel, and inpainting promises the
    pixels outside the mask back unchanged. An image of another size is an error.

    Args:
        image: a file path, a PIL image or uint8 pixels [H, W] / [H, W, C].
        size: the side the model works at (`pipe.size`).
        channels: 3 (RGB) or 1 (grey): what the model's images have.
    Raises:
        ValueError: another size, an unreadable file. FileNotFoundError: no such file.
    """
    name = str(image) if isinstance(image, str | Path) else "image"
    if isinstance(image, str | Path):
        image = _open(image, "image")
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ValueError(f"{name}: pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] != channels:
        if channels == 3 and pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        else:
            raise ValueError(f"{name}: expected {channels} channels, got {pixels.shape[-1]}")
    if pixels.shape[:2] != (size, size):
        raise ValueError(
            f"{name} is {pixels.shape[1]}x{pixels.shape[0]} pixels; the model works at "
            f"{size}x{size} (resize it first: images are not resized, so that unmasked pixels "
            "come back exactly)"
        )
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return tensor, pixels


def read_mask(mask: str | Path | Image.Image | np.ndarray, size: int) -> tuple[Tensor, np.ndarray]:
    """A binary mask as a tensor [1, 1, H, W] (1 = generate, 0 = keep) and its uint8 pixels.

    White (255) marks the region to fill, black (0) the region to keep; any other value, or a
    mask of another size than the image, is an error (no thresholding guesses).

    Raises:
        ValueError: not binary (naming some values found), wrong size, unreadable.
    """
    name = str(mask) if isinstance(mask, str | Path) else "mask"
    if isinstance(mask, str | Path):
        mask = _open(mask, "mask")
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    pixels = np.asarray(mask)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != 2 or pixels.shape != (size, size):
        raise ValueError(
            f"{name} has shape {tuple(pixels.shape)}; it must be a {size}x{size} grey image, "
            "the size of the image"
        )
    values = np.unique(pixels)
    odd = [int(v) for v in values if v not in (0, 255)]
    if odd:
        raise ValueError(
            f"{name} is not binary: it holds values {odd[:5]} besides 0 and 255 "
            "(white = fill, black = keep)"
        )
    if not (pixels == 255).any():
        raise ValueError(f"{name} is all black: there is nothing to fill")
    tensor = torch.from_numpy((pixels == 255).astype(np.float32))[None, None]
    return tensor, pixels.astype(np.uint8)


def latent_mask(mask: Tensor, factor: int) -> Tensor:
    """A pixel mask [B, 1, H, W] at latent resolution: a latent cell is generated when any
    pixel of its factor x factor patch is (max pooling), so the kept latents see only kept
    pixels."""
    return mask if factor == 1 else F.max_pool2d(mask, factor)


def blend(generated: Tensor, image: Tensor, mask: Tensor, feather: int = 0) -> Tensor:
    """Paste decoded images into the input: mask * generated + (1 - mask) * image.

    With feather = 0 (exact) the pixels where mask == 0 are the input's, bit for bit. With
    feather = r > 0 the weight rises from 0 to 1 over the r pixels outside the mask (a box blur
    of the mask, never below the mask), softening the seam; pixels farther than r from the mask
    are still the input's exactly.

    Args:
        generated, image: [B, C, H, W] in [-1, 1].
        mask: [B or 1, 1, H, W], 1 = generated.
        feather: seam width in pixels, >= 0.
    """
    if feather < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    weight = mask
    if feather:
        k = 2 * feather + 1
        weight = torch.maximum(
            mask, F.avg_pool2d(mask, k, stride=1, padding=feather, count_include_pad=False)
        )
    return torch.where(weight > 0, weight * generated + (1 - weight) * image, image)


RunFn = Callable[[Callable[[Tensor, Tensor], Tensor], Tensor, SeededNoise, int, int], Tensor]


@torch.no_grad()
def sample_from(
    denoiser: Denoiser,
    starts: Callable[[SeededNoise, int, int], Tensor],
    seeds: Sequence[int],
    run: RunFn,
    *,
    cond: Cond = None,
    uncond: Cond = None,
    guidance: float = 1.0,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    network: CondDenoiseFn | None = None,
) -> Tensor:
    """Run a sampler per batch of seeds from given starting points (the shared loop).

    Args:
        denoiser: the model.
        starts: starts(noise, start, count) -> the batch's starting tensor.
        seeds: one seed per sample.
        run: run(denoise, x, noise, start, count) -> the batch's result.
        cond, uncond, guidance, device, batch_size, network: as in
            `pipelines.sample.generate` (`network` replaces the call of the denoiser; a server
            batches the calls of many requests through it).
    Returns:
        the results [N, ...] (float32, CPU).
    """
    seeds = [int(s) for s in seeds]
    network = network or invariant_network(denoiser)
    outputs = []
    with eval_mode(denoiser):
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            noise = SeededNoise(chunk, device=device)
            denoise = batch_denoise(network, cond, uncond, guidance, start, len(chunk))
            x = starts(noise, start, len(chunk))
            outputs.append(run(denoise, x, noise, start, len(chunk)).float().cpu())
    return torch.cat(outputs)


def _rows(batch: Tensor, start: int, count: int) -> Tensor:
    """Rows start:start+count of a batch (a batch of 1 is shared by every row)."""
    return (
        batch.expand(start + count, *batch.shape[1:])[start : start + count]
        if batch.shape[0] == 1
        else batch[start : start + count]
    )


def edit_latents(
    denoiser: Denoiser,
    latents: Tensor,
    seeds: Sequence[int],
    *,
    strength: float,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    steps: int = 25,
    callback: Callback | None = None,
    **common: object,
) -> Tensor:
    """img2img / SDEdit on encoded images: noise to `strength_level`, then sample down.

    Args:
        denoiser: the model.
        latents: the encoded input [N or 1, C, h, w] (one per seed, or one for all).
        seeds: one seed per output.
        strength: in (0, 1] (see `strength_level`).
        sampler, schedule, steps: any registered sampler and schedule; `steps` steps are run
            from the starting level.
        callback: the sampler callback.
        common: cond, uncond, guidance, device, batch_size, network of `sample_from`.
    Returns:
        the edited latents [N, C, h, w].
    """
    levels = start_levels(denoiser.process, schedule, steps, strength)
    sample_fn = get_sampler(sampler)
    device = common.get("device", "cpu")
    top = float(levels[0])

    def starts(noise: SeededNoise, start: int, count: int) -> Tensor:
        clean = _rows(latents, start, count).to(device)
        return clean + top * noise.initial(clean.shape[1:]).to(clean.dtype)

    def run(denoise, x, noise, start, count) -> Tensor:  # noqa: ANN001
        return sample_fn(denoise, x, levels, noise=noise, callback=callback)

    return sample_from(denoiser, starts, seeds, run, **common)


def invert_latents(
    denoiser: Denoiser,
    latents: Tensor,
    *,
    method: str = "ddim",
    refine: int = 0,
    schedule: str = "karras",
    steps: int = 25,
    strength: float = 1.0,
    callback: Callback | None = None,
    **common: object,
) -> Tensor:
    """Invert encoded images to the top of the schedule (deterministic, no seed involved).

    Args:
        denoiser: the model.
        latents: the encoded images [N, C, h, w].
        method: a name of `samplers.inversion.INVERSIONS` ("ddim", "dpmpp_2m").
        refine: fixed-point iterations per step (exact inversion; "ddim" only).
        schedule, steps: the schedule sampling will use afterwards.
        strength: in (0, 1]: invert only up to `strength_level` (partial inversion; sample
            back with `start_levels(process, schedule, steps, strength)`); 1: to the top.
        callback: the callback of the inversion loop.
        common: cond, uncond, guidance, device, batch_size, network of `sample_from`.
    Returns:
        the noisy latents at the schedule's first level [N, C, h, w].
    """
    inversion, _ = get_inversion(method)
    levels = start_levels(denoiser.process, schedule, steps, check_strength(strength))
    device = common.get("device", "cpu")

    def starts(noise: SeededNoise, start: int, count: int) -> Tensor:
        return latents[start : start + count].to(device)

    def run(denoise, x, noise, start, count) -> Tensor:  # noqa: ANN001
        return inversion(denoise, x, levels, refine=refine, callback=callback)

    return sample_from(denoiser, starts, range(latents.shape[0]), run, **common)


def inpaint_latents(
    denoiser: Denoiser,
    latents: Tensor,
    mask: Tensor,
    seeds: Sequence[int],
    *,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    steps: int = 25,
    resample: int = 1,
    callback: Callback | None = None,
    **common: object,
) -> Tensor:
    """Training-free inpainting of encoded images (`samplers.inpaint`).

    Args:
        denoiser: the model.
        latents: the encoded input [N or 1, C, h, w].
        mask: [N or 1, 1, h, w] at latent resolution (`latent_mask`), 1 = generate.
        seeds: one seed per output.
        sampler, schedule, steps: any registered sampler (resample > 1: RePaint, whose steps
            are DDPM posterior steps, so the sampler is not used).
        resample: RePaint's resampling count per step (1: replacement after every step only).
        callback: the sampler callback (called before the known region is pasted).
        common: cond, uncond, guidance, device, batch_size, network of `sample_from`.
    Returns:
        latents [N, C, h, w] whose kept region equals `latents`'.
    """
    levels = get_schedule(schedule)(denoiser.process, steps)
    sample_fn = get_sampler(sampler)
    device = common.get("device", "cpu")
    top = float(levels[0])
    check_mask(mask, latents)
    regions: dict[int, KnownRegion] = {}

    def starts(noise: SeededNoise, start: int, count: int) -> Tensor:
        clean = _rows(latents, start, count).to(device)
        eps = noise.initial(clean.shape[1:]).to(clean.dtype)
        region = KnownRegion(clean, _rows(mask, start, count).to(device), eps, then=callback)
        regions[start] = region
        return clean + top * eps

    def run(denoise, x, noise, start, count) -> Tensor:  # noqa: ANN001
        region = regions.pop(start)
        if resample > 1:
            return repaint(
                denoise, x, levels, region=region, resample=resample, noise=noise, callback=callback
            )
        return sample_fn(denoise, x, levels, noise=noise, callback=region)

    return sample_from(denoiser, starts, seeds, run, **common)


def inpaint_with_model(
    denoiser: Denoiser,
    latents: Tensor,
    mask: Tensor,
    seeds: Sequence[int],
    *,
    sampler: str = "dpmpp_2m",
    schedule: str = "karras",
    steps: int = 25,
    callback: Callback | None = None,
    cond: Cond = None,
    uncond: Cond = None,
    **common: object,
) -> Tensor:
    """Inpainting with a trained inpainting model: sampling from noise, the mask and the masked
    latents given to the network as extra inputs (`denoiser.inpainting_inputs`) in both the
    conditional and the unconditional branch.

    Args:
        denoiser: an inpainting model (`ModelInfo.inpainting`).
        latents: the encoded input [N or 1, C, h, w].
        mask: [N or 1, 1, h, w] at latent resolution (`latent_mask`), 1 = generate.
        seeds: one seed per output.
        sampler, schedule, steps: any registered sampler.
        callback: the sampler callback.
        cond, uncond: the prompt's and the negative prompt's conditioning.
        common: guidance, device, batch_size of `sample_from`.
    Returns:
        latents [N, C, h, w] (blend after decoding to keep the pixels outside the mask).
    """
    check_mask(mask, latents)
    levels = get_schedule(schedule)(denoiser.process, steps)
    sample_fn = get_sampler(sampler)
    device = common.get("device", "cpu")
    rows = max(latents.shape[0], mask.shape[0])
    # [N or 1, 1 + C, h, w]: one image for many seeds is shared, as a prompt is
    extra = inpainting_inputs(latents.expand(rows, *latents.shape[1:]), mask).to(device)
    cond = (cond or {}) | {EXTRA_INPUTS: extra}
    uncond = (uncond or {}) | {EXTRA_INPUTS: extra}

    def starts(noise: SeededNoise, start: int, count: int) -> Tensor:
        return float(levels[0]) * noise.initial(latents.shape[1:]).to(device)

    def run(denoise, x, noise, start, count) -> Tensor:  # noqa: ANN001
        return sample_fn(denoise, x, levels, noise=noise, callback=callback)

    return sample_from(denoiser, starts, seeds, run, cond=cond, uncond=uncond, **common)
