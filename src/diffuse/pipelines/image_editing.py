"""The text-to-image pipeline's methods that start from an image: edit, invert, inpaint.

    pipe = diffuse.load_pipeline()
    out = pipe.edit("scene.png", "a blue circle in the middle", strength=0.6, seeds=[0])
    out = pipe.edit_by_inversion("scene.png", "a red circle in the middle",
                                 "a blue circle in the middle")
    out = pipe.inpaint("scene.png", "hole.png", "a green star in the top left", seeds=[0])

Each call is described by an `EditParams` (the generation parameters plus the task, strength,
the input's pixel hash, the mask's hash...), which `diffuse edit` / `diffuse inpaint` store in
every PNG so that `--from-png` makes the same pixels again. The mechanics are in
`pipelines.image_to_image`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffuse.guidance import CondDenoiseFn
from diffuse.pipelines.call_conventions import GenerationOutput, convert_images
from diffuse.pipelines.image_to_image import (
    blend,
    check_scale,
    check_strength,
    edit_latents,
    image_hash,
    inpaint_latents,
    inpaint_with_model,
    invert_latents,
    latent_mask,
    read_image,
    read_mask,
    sample_from,
)
from diffuse.samplers.base import Callback
from diffuse.samplers.inversion import get_inversion
from diffuse.samplers.registry import get_sampler, get_schedule

if TYPE_CHECKING:
    from diffuse.pipelines.text_to_image import GenerationParams

__all__ = ["TASKS", "EditParams", "ImageEditing"]

TASKS: tuple[str, ...] = ("img2img", "inversion", "inpaint")
ImageInput = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class EditParams:
    """Everything that determines the images of an edit; stored in each PNG it writes.

    Attributes:
        generation: prompt, seeds, sampler, schedule, steps, guidance, model (as generate).
        task: "img2img", "inversion" or "inpaint".
        image_hash: `image_to_image.image_hash` of the input's pixels.
        image: where the input came from (a path, or "" for an in-memory image).
        strength: img2img's starting strength in (0, 1] (1 for the other tasks).
        source_prompt: inversion: the prompt the image is inverted with.
        inversion: inversion: the method ("ddim", "dpmpp_2m"); the matching sampler is used.
        refine: inversion: fixed-point iterations per step (exact inversion).
        source_guidance: inversion: the guidance scale of the way up (default 1: the unguided
            probability-flow ODE, whose inversion is exact; the way down uses `generation`'s).
        mask_hash, mask: inpainting: the mask's pixel hash and where it came from.
        resample: inpainting: RePaint resampling per step (1: none).
        feather: inpainting: seam width in pixels of the final blend (0: exact).
    """

    generation: GenerationParams
    task: str
    image_hash: str
    image: str = ""
    strength: float = 1.0
    source_prompt: str = ""
    inversion: str = "ddim"
    refine: int = 0
    source_guidance: float = 1.0
    mask_hash: str = ""
    mask: str = ""
    resample: int = 1
    feather: int = 0

    @property
    def steps_total(self) -> int:
        """Sampler steps one batch takes (inversion walks the schedule twice)."""
        return self.generation.steps * (2 if self.task == "inversion" else 1)

    def for_seed(self, seed: int) -> dict[str, Any]:
        """The parameters of the image of one seed, as a JSON-ready dict."""
        extra: dict[str, Any] = {"task": self.task, "image": self.image}
        extra["image_hash"] = self.image_hash
        if self.task == "img2img":
            extra["strength"] = self.strength
        if self.task == "inversion":
            extra |= {
                "source_prompt": self.source_prompt,
                "inversion": self.inversion,
                "refine": self.refine,
                "source_guidance": self.source_guidance,
            }
        if self.task == "inpaint":
            extra |= {
                "mask": self.mask,
                "mask_hash": self.mask_hash,
                "resample": self.resample,
                "feather": self.feather,
            }
        return self.generation.for_seed(seed) | extra


def _count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class ImageEditing:
    """Mixed into `TextToImagePipeline`: the methods that start from an image.

    Uses the pipeline's `model`, `encoder`, `device`, `size` and `params`.
    """

    def edit_params(
        self,
        task: str,
        prompt: str,
        image: ImageInput,
        *,
        mask: ImageInput | None = None,
        strength: float = 1.0,
        source_prompt: str = "",
        inversion: str = "ddim",
        refine: int = 0,
        source_guidance: float = 1.0,
        resample: int = 1,
        feather: int = 0,
        **generation: Any,
    ) -> EditParams:
        """Check an edit request and fill in the model's defaults.

        Args:
            task: "img2img", "inversion" or "inpaint".
            prompt: the target prompt.
            image: the input (path, PIL image or uint8 pixels), the model's size.
            mask: inpainting's mask (white = fill, black = keep), the image's size.
            strength, source_prompt, inversion, refine, source_guidance, resample, feather:
                see `EditParams`.
            generation: negative_prompt, seeds, n, sampler, schedule, steps, guidance, size
                as `TextToImagePipeline.params` takes them.
        Returns:
            the parameters.
        Raises:
            ValueError: any bad value, named (strength outside (0, 1], an image or mask of the
                wrong size, a mask that is not binary, an unknown task or inversion method).
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        strength = check_strength(strength)
        if task == "inversion":
            get_inversion(inversion)
            _count("refine", refine, 0)
            if refine and inversion != "ddim":
                raise ValueError(f"refine works with the ddim inversion only, got {inversion!r}")
            source_guidance = check_scale("source guidance", source_guidance)
            if not isinstance(source_prompt, str):
                raise ValueError(f"source prompt must be a string, got {source_prompt!r}")
            matching = get_inversion(inversion)[1]
            if generation.get("sampler") not in (None, matching):
                raise ValueError(
                    f"the {inversion!r} inversion is undone by the {matching!r} sampler, "
                    f"got sampler {generation['sampler']!r}"
                )
            generation["sampler"] = matching
        _count("resample", resample, 1)
        if task == "inpaint":
            self._check_resample(resample)
        _count("feather", feather, 0)
        params = self.params(prompt, **generation)
        _, pixels = read_image(image, self.size, self.model.codec.image_channels)
        mask_hash, mask_name = "", ""
        if task == "inpaint":
            if mask is None:
                raise ValueError("inpainting needs a mask (white = fill, black = keep)")
            _, mask_pixels = read_mask(mask, self.size)
            mask_hash = image_hash(mask_pixels)
            mask_name = str(mask) if isinstance(mask, str | Path) else ""
        elif mask is not None:
            raise ValueError(f"a mask is only used for inpainting, not for {task}")
        return EditParams(
            generation=params,
            task=task,
            image_hash=image_hash(pixels),
            image=str(image) if isinstance(image, str | Path) else "",
            strength=strength if task == "img2img" else 1.0,
            source_prompt=source_prompt if task == "inversion" else "",
            inversion=inversion if task == "inversion" else "ddim",
            refine=refine if task == "inversion" else 0,
            source_guidance=source_guidance if task == "inversion" else 1.0,
            mask_hash=mask_hash,
            mask=mask_name,
            resample=resample if task == "inpaint" else 1,
            feather=feather if task == "inpaint" else 0,
        )

    def _check_resample(self, resample: int) -> None:
        """RePaint's resampling is for training-free inpainting only."""
        if self.model.info.inpainting and resample != 1:
            raise ValueError(
                f"resample = {resample}: resampling is for training-free inpainting; "
                "this is a trained inpainting model (use resample 1)"
            )

    def _cond(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        cond = self.conditioning(list(prompts))
        return {k: v.to(self.device) for k, v in cond.items()}

    @torch.no_grad()
    def run_edit(
        self,
        params: EditParams,
        image: ImageInput,
        mask: ImageInput | None = None,
        callback: Callback | None = None,
        network: CondDenoiseFn | None = None,
        decoder: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Images [N, C, H, W] in [-1, 1] for checked edit parameters (see `edit_params`).

        Args:
            params: the request.
            image: the input image; its pixels must have `params.image_hash`.
            mask: the mask (inpainting); its pixels must have `params.mask_hash`.
            callback: the sampler callback (e.g. a progress bar).
            network: network(x, level, cond) replaces the call of the denoiser, as in
                `TextToImagePipeline.generate` (a server batches requests through it).
            decoder: decoder(samples) replaces `model.decode`, as in `generate`.
        Raises:
            ValueError: an image or mask other than the one the parameters were made for.
        """
        g = params.generation
        decode = decoder or self.model.decode
        pixels_t, pixels = read_image(image, self.size, self.model.codec.image_channels)
        if image_hash(pixels) != params.image_hash:
            raise ValueError(
                f"the image's pixels (hash {image_hash(pixels)}) are not those of the request "
                f"(hash {params.image_hash})"
            )
        pixels_t = pixels_t.to(self.device)
        latents = self.model.codec.encode(pixels_t)
        seeds = list(g.seeds)
        common = {
            "cond": self._cond([g.prompt]),
            "uncond": self._cond([g.negative_prompt]),
            "guidance": g.guidance,
            "device": self.device,
            "network": network,
        }
        if params.task == "img2img":
            out = edit_latents(
                self.model.denoiser,
                latents,
                seeds,
                strength=params.strength,
                sampler=g.sampler,
                schedule=g.schedule,
                steps=g.steps,
                callback=callback,
                **common,
            )
            return decode(out.to(self.device)).cpu()
        if params.task == "inversion":
            source = common | {
                "cond": self._cond([params.source_prompt]),
                "guidance": params.source_guidance,
            }
            noisy = invert_latents(
                self.model.denoiser,
                latents,
                method=params.inversion,
                refine=params.refine,
                schedule=g.schedule,
                steps=g.steps,
                callback=callback,
                **source,
            )
            levels = self._levels(g.schedule, g.steps)
            sample_fn = get_sampler(g.sampler)
            out = sample_from(
                self.model.denoiser,
                lambda noise, start, count: noisy.expand(count, *noisy.shape[1:]).to(self.device),
                seeds,
                lambda denoise, x, noise, start, count: sample_fn(
                    denoise, x, levels, noise=noise, callback=callback
                ),
                **common,
            )
            return decode(out.to(self.device)).cpu()
        mask_t, mask_pixels = read_mask(mask, self.size) if mask is not None else (None, None)
        if mask_t is None or image_hash(mask_pixels) != params.mask_hash:
            raise ValueError(f"the mask is not the one of the request (hash {params.mask_hash})")
        mask_t = mask_t.to(self.device)
        small = latent_mask(mask_t, self.model.codec.downsample)
        if self.model.info.inpainting:  # a trained inpainting model: no resampling
            self._check_resample(params.resample)
            sample, extra = inpaint_with_model, {}
        else:
            sample, extra = inpaint_latents, {"resample": params.resample}
        out = sample(
            self.model.denoiser,
            latents,
            small,
            seeds,
            sampler=g.sampler,
            schedule=g.schedule,
            steps=g.steps,
            callback=callback,
            **extra,
            **common,
        )
        decoded = decode(out.to(self.device))
        return blend(decoded, pixels_t, mask_t, params.feather).cpu()

    def _levels(self, schedule: str, steps: int) -> Tensor:
        return get_schedule(schedule)(self.model.denoiser.process, steps)

    def _output(self, params: EditParams, images: Tensor, output_type: str) -> GenerationOutput:
        g = params.generation
        return GenerationOutput(
            convert_images(images, output_type), g.seeds, (g.prompt,) * len(g.seeds)
        )

    def edit(
        self,
        image: ImageInput,
        prompt: str,
        *,
        strength: float = 0.6,
        output_type: str = "pil",
        callback: Callback | None = None,
        **generation: Any,
    ) -> GenerationOutput:
        """img2img / SDEdit: change `image` towards `prompt` (strength in (0, 1]).

        `generation` takes `TextToImagePipeline.params`' keywords (seeds, n, sampler, schedule,
        steps, guidance, negative_prompt). Returns the images as `__call__` does.
        """
        params = self.edit_params("img2img", prompt, image, strength=strength, **generation)
        return self._output(params, self.run_edit(params, image, callback=callback), output_type)

    def edit_by_inversion(
        self,
        image: ImageInput,
        source_prompt: str,
        prompt: str,
        *,
        inversion: str = "ddim",
        refine: int = 0,
        source_guidance: float = 1.0,
        output_type: str = "pil",
        callback: Callback | None = None,
        **generation: Any,
    ) -> GenerationOutput:
        """Invert `image` with `source_prompt`, then sample it back with `prompt`.

        The inversion runs at `source_guidance` (default 1, unguided: exact up to the solver's
        error), the way down at the request's guidance. With prompt == source_prompt and
        guidance 1 this reconstructs the image (up to the codec, and to the fixed-point
        tolerance with `refine`).
        """
        params = self.edit_params(
            "inversion",
            prompt,
            image,
            source_prompt=source_prompt,
            inversion=inversion,
            refine=refine,
            source_guidance=source_guidance,
            **generation,
        )
        return self._output(params, self.run_edit(params, image, callback=callback), output_type)

    def inpaint(
        self,
        image: ImageInput,
        mask: ImageInput,
        prompt: str,
        *,
        resample: int = 1,
        feather: int = 0,
        output_type: str = "pil",
        callback: Callback | None = None,
        **generation: Any,
    ) -> GenerationOutput:
        """Fill the white region of `mask` in `image` following `prompt` (training-free).

        Pixels where the mask is black come back exactly as given (feather = 0).
        """
        params = self.edit_params(
            "inpaint", prompt, image, mask=mask, resample=resample, feather=feather, **generation
        )
        images = self.run_edit(params, image, mask=mask, callback=callback)
        return self._output(params, images, output_type)
