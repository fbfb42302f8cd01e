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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffuse.codecs.base import PromptEncoder
from diffuse.codecs.text_encoder import TextEncoder
from diffuse.io import file_sha256
from diffuse.model_folder import WEIGHTS_FILE, TrainedModel, load_model
from diffuse.pipelines.sample import generate, to_uint8
from diffuse.samplers.base import Callback
from diffuse.samplers.registry import get_sampler, get_schedule

__all__ = ["DEFAULT_MODEL", "GenerationParams", "TextToImagePipeline", "load_pipeline"]

DEFAULT_MODEL = "shapes-t2i"


def default_model_dir() -> Path:
    """Folder of the bundled default model inside the installed package."""
    return Path(str(resources.files("diffuse") / "assets" / "models" / DEFAULT_MODEL))


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

    def for_seed(self, seed: int) -> dict[str, Any]:
        """The parameters of the image of one seed, as a JSON-ready dict."""
        return {
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


class TextToImagePipeline:
    """A text-conditioned model with its text encoder; call it with a prompt.

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
    ) -> GenerationParams:
        """Check a request and fill in the model's defaults (ValueError naming a bad value)."""
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
        sampler = sampler or self.defaults.sampler
        schedule = schedule or self.defaults.schedule
        get_sampler(sampler)  # unknown names raise, listing the valid ones
        get_schedule(schedule)
        steps = int(self.defaults.steps if steps is None else steps)
        if not 1 <= steps <= 1000:
            raise ValueError(f"steps must be in 1..1000, got {steps}")
        guidance = float(self.defaults.guidance if guidance is None else guidance)
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
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
        )

    @torch.no_grad()
    def generate(
        self,
        params: GenerationParams,
        callback: Callback | None = None,
        prompts: Sequence[str] | None = None,
    ) -> Tensor:
        """Images [N, 3, H, W] in [-1, 1] for checked parameters (see `params`).

        `prompts`, one per seed, replaces `params.prompt` (many prompts in one batch: each
        image still depends only on its prompt and seed).
        """
        if prompts is not None and len(prompts) != len(params.seeds):
            raise ValueError(f"{len(prompts)} prompts for {len(params.seeds)} seeds")
        prompt_cond = self.encoder.encode(list(prompts or [params.prompt])).as_cond()
        uncond = self.encoder.encode([params.negative_prompt]).as_cond()
        to = self.device
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
        )
        return self.model.decode(latents)

    def __call__(
        self,
        prompt: str,
        negative_prompt: str = "",
        *,
        callback: Callback | None = None,
        **settings: Any,
    ) -> list:
        """Generate one PIL image per seed (default seeds 0 .. n-1) for `prompt`.

        `settings` are those of `params`: seeds, n, sampler, schedule, steps, guidance, size.
        """
        return to_pil(self.generate(self.params(prompt, negative_prompt, **settings), callback))


def to_pil(images: Tensor) -> list:
    """Images [N, C, H, W] in [-1, 1] -> PIL images (uint8, round to nearest)."""
    from PIL import Image

    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in to_uint8(images)]


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
    encoder = TextEncoder(source, device=device)
    root = trained.folder
    label = DEFAULT_MODEL if model is None else root.resolve().name
    if label == "model":  # a run folder's model/: name it after the run
        label = root.resolve().parent.name
    return TextToImagePipeline(trained, encoder, label, weights_hash(root), device)
