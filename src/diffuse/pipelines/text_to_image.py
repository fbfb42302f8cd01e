"""Text-to-image: a trained text-conditioned model, its frozen text encoder, and a sampler.

    pipe = diffuse.load_pipeline()                  # the bundled default model
    images = pipe("a red circle above a blue square", seeds=[0, 1, 2, 3])   # PIL images

The model folder is what `diffuse train` writes for a recipe with `model.text_encoder` set:
the network, and diffusion.json naming the process and the text encoder. Prompts are encoded
once per call (and cached by the encoder); the empty prompt is the unconditional input, and a
negative prompt replaces it in classifier-free guidance. Every image depends only on its seed,
never on the batch it was generated in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuse.codecs.base import PromptEncoder
from diffuse.codecs.text_encoder import TextEncoder
from diffuse.denoiser import EXTRA_INPUTS, inpainting_inputs
from diffuse.fitted_solvers import FITTED, FittedSolver, choose_solver, read_solvers
from diffuse.guidance import CondDenoiseFn
from diffuse.io import file_sha256
from diffuse.model_folder import BUNDLED_MODELS, WEIGHTS_FILE, TrainedModel, load_model
from diffuse.pipelines.call_conventions import (
    OUTPUT_TYPES,
    GenerationOutput,
    OutputType,
    convert_images,
    expand_prompts,
    seeds_from_generators,
    to_pil,
)
from diffuse.pipelines.image_editing import EditParams, ImageEditing
from diffuse.pipelines.image_to_image import check_scale
from diffuse.pipelines.sample import generate
from diffuse.samplers.base import Callback, StepInfo
from diffuse.samplers.registry import get_sampler, get_schedule

__all__ = [
    "DEFAULT_MODEL",
    "EditParams",
    "GenerationOutput",
    "GenerationParams",
    "TextToImagePipeline",
    "load_pipeline",
    "to_pil",
]

DEFAULT_MODEL = "shapes-t2i"


def default_model_dir() -> Path:
    """Folder of the bundled default model inside the installed package."""
    return BUNDLED_MODELS / DEFAULT_MODEL


@dataclass(frozen=True)
class GenerationParams:
    """Everything that determines the images of one call; stored in each PNG it writes."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    sampler: str
    schedule: str
    steps: int
    guidance: float
    size: int
    model: str
    model_hash: str
    solver: str = ""  # `FittedSolver.digest` when sampler is "fitted"

    def for_seed(self, seed: int) -> dict[str, Any]:
        """The parameters of the image of one seed, as a JSON-ready dict."""
        extra = {"solver": self.solver} if self.solver else {}
        return extra | {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": int(seed),
            "sampler": self.sampler,
            "schedule": self.schedule,
            "steps": self.steps,
            "guidance": self.guidance,
            "size": self.size,
            "model": self.model,
            "model_hash": self.model_hash,
        }


def weights_hash(folder: Path) -> str:
    """The first 12 hex digits of the sha256 of the model's weights file.

    Args:
        folder: the model folder.
    Returns:
        12 hex digits.
    """
    return file_sha256(folder / WEIGHTS_FILE)[:12]


class TextToImagePipeline(ImageEditing):
    """A text-conditioned model with its text encoder; call it with a prompt.

    It also edits, inverts and inpaints images (`pipelines.image_editing.ImageEditing`).

    Args:
        model: the loaded model folder (`model_folder.load_model`).
        encoder: the frozen text encoder named in its diffusion.json (a `PromptEncoder`).
        name: the model's name (folder name), recorded in PNG metadata.
        model_hash: see `weights_hash`.
    """

    def __init__(
        self, model: TrainedModel, encoder: PromptEncoder, name: str, model_hash: str, device: str
    ) -> None:
        self.model, self.encoder, self.name, self.model_hash = model, encoder, name, model_hash
        self.device = device
        self.defaults = model.info.sampling  # what an unset sampler, steps, guidance... become
        self.solvers: dict[int, FittedSolver] = read_solvers(model.folder)  # by steps

    @property
    def size(self) -> int:
        """The side in pixels of the images this model generates."""
        return self.model.image_size

    def params(
        self,
        prompt: str,
        negative_prompt: str = "",
        *,
        seeds: Sequence[int] | None = None,
        n: int | None = None,
        sampler: str | None = None,
        schedule: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        size: int | None = None,
        solver: str | None = None,
    ) -> GenerationParams:
        """Check a request and fill in the model's defaults (ValueError naming a bad value).

        With no sampler and no schedule named, a step count the model folder has a fitted
        solver for (`diffuse fit-solver`) runs that solver (sampler "fitted"); `solver` is the
        digest a stored request expects of it."""
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise ValueError("prompt and negative prompt must be strings")
        if seeds is None:
            count = 1 if n is None else n
            if count < 1:
                raise ValueError(f"number of images must be >= 1, got {count}")
            seeds = range(count)
        elif n is not None and n != len(seeds):
            raise ValueError(f"{len(seeds)} seeds given for {n} images")
        seeds = tuple(int(s) for s in seeds)
        if not seeds:
            raise ValueError("give at least one seed")
        if any(not 0 <= s < 2**63 for s in seeds):
            raise ValueError(f"seeds must be in [0, 2**63), got {list(seeds)}")
        steps_given = steps is not None
        steps = int(self.defaults.steps if steps is None else steps)
        if not 1 <= steps <= 1000:
            raise ValueError(f"steps must be in 1..1000, got {steps}")
        guidance = check_scale(
            "guidance", float(self.defaults.guidance if guidance is None else guidance)
        )
        fitted = choose_solver(
            self.solvers,
            steps,
            sampler=sampler,
            schedule=schedule,
            guidance=guidance,
            fallback=sampler or self.defaults.sampler,
            steps_given=steps_given,
            digest=solver,
        )
        if fitted is not None:
            sampler = schedule = FITTED
        else:
            sampler = sampler or self.defaults.sampler
            schedule = schedule or self.defaults.schedule
            get_sampler(sampler)  # unknown names raise, listing the valid ones
            get_schedule(schedule)
        size = self.size if size is None else int(size)
        if size != self.size:
            raise ValueError(
                f"size {size} is not available: model {self.name!r} generates "
                f"{self.size}x{self.size} images"
            )
        return GenerationParams(
            prompt=prompt,
            negative_prompt=negative_prompt,
            seeds=seeds,
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guidance=guidance,
            size=size,
            model=self.name,
            model_hash=self.model_hash,
            solver=fitted.digest if fitted is not None else "",
        )

    @torch.no_grad()
    def conditioning(self, prompts: list[str]) -> dict[str, Tensor]:
        """The network's text conditioning of `prompts`: context, mask and, for a network with
        a pooled embedding (not Stable Diffusion's U-Net), the pooled embedding. An encoder
        that pads to max_length (Stable Diffusion's CLIP) gives an all-True mask, which is left
        out: attending to every token needs no mask, and unmasked attention is faster."""
        cond = self.encoder.encode(prompts).as_cond()
        if not getattr(self.model.denoiser.net.config, "pooled_dim", 0):
            cond.pop("pooled")
        if getattr(self.encoder, "padding", None) == "max_length":
            cond.pop("context_mask")
        return cond

    def generate(
        self,
        params: GenerationParams,
        callback: Callback | None = None,
        prompts: Sequence[str] | None = None,
        negative_prompts: Sequence[str] | None = None,
        decode: bool = True,
        network: CondDenoiseFn | None = None,
        extra_cond: dict[str, Tensor] | None = None,
        decoder: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Images [N, 3, H, W] in [-1, 1] for checked parameters (see `params`).

        `prompts` and `negative_prompts`, one per seed, replace `params.prompt` and
        `params.negative_prompt` (many prompts in one batch: each image still depends only on
        its prompts and seed). `decode=False` returns the network's samples (the latents of a
        latent model) instead of images. `network(x, level, cond)` replaces the call of the
        denoiser (`pipelines.sample.generate`; a server batches requests through it), and
        `decoder(samples)` replaces `model.decode` (a server decodes requests together).
        """
        for name, texts in (("prompts", prompts), ("negative prompts", negative_prompts)):
            if texts is not None and len(texts) != len(params.seeds):
                raise ValueError(f"{len(texts)} {name} for {len(params.seeds)} seeds")
        prompt_cond = self.conditioning(list(prompts or [params.prompt]))
        uncond = self.conditioning(list(negative_prompts or [params.negative_prompt]))
        if self.model.info.inpainting and EXTRA_INPUTS not in (extra_cond or {}):
            # an inpainting model asked for a whole picture: everything is masked
            c, h, w = self.model.shape
            whole = inpainting_inputs(torch.zeros(1, c, h, w), torch.ones(1, 1, h, w))
            extra_cond = (extra_cond or {}) | {EXTRA_INPUTS: whole}
        if extra_cond:
            prompt_cond, uncond = prompt_cond | extra_cond, uncond | extra_cond
        to = self.device
        fitted = None
        if params.sampler == FITTED:
            fitted = choose_solver(
                self.solvers,
                params.steps,
                sampler=FITTED,
                schedule=FITTED,
                guidance=params.guidance,
                fallback=FITTED,
                digest=params.solver,
            )
        latents = generate(
            self.model.denoiser,
            self.model.shape,
            list(params.seeds),
            cond={k: v.to(to) for k, v in prompt_cond.items()},
            uncond={k: v.to(to) for k, v in uncond.items()},
            sampler=params.sampler,
            schedule=params.schedule,
            steps=params.steps,
            guidance=params.guidance,
            device=to,
            callback=callback,
            network=network,
            solver=None if fitted is None else fitted.coefficients,
        )
        return (decoder or self.model.decode)(latents) if decode else latents

    def __call__(
        self,
        prompt: str | Sequence[str] = "",
        negative_prompt: str | Sequence[str] | None = None,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        callback_on_step_end: Callable[..., dict[str, Any] | None] | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        seeds: Sequence[int] | None = None,
        n: int | None = None,
        sampler: str | None = None,
        schedule: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        size: int | None = None,
        callback: Callback | None = None,
    ) -> GenerationOutput | tuple[Any]:
        """Generate images for one prompt or a list of prompts.

        Both vocabularies are accepted: diffusers' names and this toolkit's (`seeds`, `n`,
        `steps`, `guidance`, `size`, `callback`); giving both names of one setting with
        different values is an error.

        Args:
            prompt: a prompt or a list of prompts ("" is the unconditional image).
            negative_prompt: replaces the unconditional branch of guidance: one for all
                prompts or one per prompt.
            num_inference_steps / steps: sampler steps (model default).
            guidance_scale / guidance: classifier-free guidance scale (model default).
            height, width / size: must equal the model's image size (the default).
            num_images_per_prompt: images per prompt (`n` is its other name); when neither is
                given, `seeds` or a list of generators set the count.
            generator: a torch.Generator or one per image, mapped onto per-image seeds
                (`diffuse.pipelines.call_conventions`); or give `seeds` directly (default
                0 .. N-1).
            callback_on_step_end: diffusers-style `f(pipe, step, level, {"latents": x,
                "denoised": x0})` after every step; a returned dict's "latents" tensor
                replaces the sample.
            callback: this toolkit's `f(StepInfo)` (samplers/base.py).
            output_type: "pil" (default), "np" / "pt" (float32 in [0, 1]), or "latent" (the
                network's samples, before the codec decodes them).
            return_dict: False returns the tuple `(images,)` as diffusers does.
            sampler, schedule: names known to `diffuse.samplers` (model default).
        Returns:
            a `GenerationOutput` (`.images`, `.seeds`, `.prompts`; also a sequence of images).
        Raises:
            ValueError: a bad or conflicting argument, naming it and its value.
        """
        steps = _one_of("steps", steps, "num_inference_steps", num_inference_steps)
        guidance = _one_of("guidance", guidance, "guidance_scale", guidance_scale)
        size = _one_of("size", size, "height", height)
        size = _one_of("size", size, "width", width)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(
                f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}"
            )
        if n is not None and num_images_per_prompt != 1:
            raise ValueError("give n or num_images_per_prompt, not both")
        per_prompt = num_images_per_prompt if n is None else n
        given = seeds if seeds is not None else generator
        if n is None and num_images_per_prompt == 1 and isinstance(given, Sequence):
            # seeds (or one generator each) alone set the count, as `pipe(p, seeds=[3, 5])`
            count = len(prompt) if isinstance(prompt, list | tuple) and prompt else 1
            per_prompt = max(1, len(given) // count)
        prompts, negatives = expand_prompts(prompt, negative_prompt, per_prompt)
        if generator is not None:
            if seeds is not None:
                raise ValueError("give seeds or generator, not both")
            seeds = seeds_from_generators(generator, len(prompts))
        elif seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds given for {len(prompts)} images")
        params = self.params(
            prompts[0],
            negatives[0],
            seeds=seeds,
            n=len(prompts),
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guidance=guidance,
            size=size,
        )
        step_hook = callback
        if callback_on_step_end is not None:
            if callback is not None:
                raise ValueError("give callback or callback_on_step_end, not both")
            step_hook = functools.partial(_diffusers_step_end, self, callback_on_step_end)
        samples = self.generate(
            params,
            step_hook,
            prompts=prompts,
            negative_prompts=negatives,
            decode=output_type != "latent",
        )
        images = samples if output_type == "latent" else convert_images(samples, output_type)
        if not return_dict:
            return (images,)
        return GenerationOutput(images, params.seeds, tuple(prompts))

    def to(self, device: str | torch.device) -> TextToImagePipeline:
        """Move the network, its codec and the text encoder to `device`; returns self."""
        self.model.denoiser.to(device)
        self.model.codec = self.model.codec.to(device)
        self.encoder = self.encoder.to(device)
        self.device = str(device)
        return self

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, device: str = "cpu"
    ) -> TextToImagePipeline:
        """Load a model folder (default: the bundled model); the same as `load_pipeline`."""
        return load_pipeline(path, device=device)


def _one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The value of a setting given under its own name or its diffusers alias (not both,
    unless equal)."""
    if alias_value is None:
        return value
    if value is not None and value != alias_value:
        raise ValueError(f"{name}={value!r} and {alias}={alias_value!r} disagree; give one")
    return alias_value


def _diffusers_step_end(
    pipe: TextToImagePipeline, hook: Callable[..., Any], info: StepInfo
) -> Tensor | None:
    """Call a diffusers-style `callback_on_step_end` with a step's state; its returned
    "latents" (a tensor) replaces the sample."""
    result = hook(pipe, info.index, info.level, {"latents": info.x, "denoised": info.denoised})
    latents = result.get("latents") if isinstance(result, dict) else None
    return latents if isinstance(latents, Tensor) else None


def load_pipeline(
    model: str | Path | None = None, device: str = "cpu", text_encoder: str | Path | None = None
) -> TextToImagePipeline:
    """Load a text-to-image model folder (default: the bundled model) with its text encoder.

    Args:
        model: model folder or run folder written by `diffuse train`; None = the bundled model.
        device: where the network and the encoder run.
        text_encoder: override the encoder named in the model (a local folder or package).
    Returns:
        The pipeline.
    Raises:
        FileNotFoundError: no model there (a `model_folder.MissingModelFileError`).
        ValueError: the model is not text-conditioned; a damaged model file
            (`model_folder.ModelFileError`, naming the file).
    """
    folder = Path(model) if model is not None else default_model_dir()
    trained = load_model(folder, device=device)
    name = trained.info.text_encoder
    if not name and text_encoder is None:
        raise ValueError(
            f"{folder} is not a text-to-image model (its diffusion.json names no text encoder); "
            "use `diffuse sample` for class-conditional models"
        )
    source = text_encoder if text_encoder is not None else (None if name == "default" else name)
    if text_encoder is None and name and (trained.folder / name).is_dir():
        source = trained.folder / name  # a text encoder shipped inside the model folder
    encoder = TextEncoder(source, device=device, padding=trained.info.text_padding)
    root = trained.folder
    label = DEFAULT_MODEL if model is None else root.resolve().name
    if label == "model":  # a run folder's model/: name it after the run
        label = root.resolve().parent.name
    return TextToImagePipeline(trained, encoder, label, weights_hash(root), device)
