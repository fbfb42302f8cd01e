"""The diffusers call conventions, mapped onto this toolkit's own terms.

A diffusers user writes `pipe(prompt, num_inference_steps=25, guidance_scale=4,
generator=torch.Generator().manual_seed(7), output_type="np").images`. This module turns those
arguments into what the pipeline works with (one prompt and one seed per image) and the
finished images into the requested output type, so `TextToImagePipeline.__call__` accepts both
vocabularies without a branch per name.

Generators and seeds: every image here depends only on its own seed (noise is drawn from a
per-image generator, never from a batch-wide stream). A `torch.Generator` therefore stands for
a seed:

- a generator still at the state `manual_seed(s)` left it stands for seed `s` (so
  `generator=torch.Generator().manual_seed(7)` gives exactly the image of `seeds=[7]`); a list
  of such generators gives one seed each;
- one generator for several images gives seeds s, s+1, ... (like `--seed s -n N`);
- a generator that has already been used draws its seed(s) from its stream instead.

In every case the generator is then advanced, as a diffusers pipeline advances it, so a second
call with the same generator gives new images; `GenerationOutput.seeds` reports the seeds used,
so any image can be made again with `seeds=`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffuse.pipelines.sample import to_uint8

__all__ = [
    "OUTPUT_TYPES",
    "GenerationOutput",
    "OutputType",
    "convert_images",
    "expand_prompts",
    "seeds_from_generators",
    "to_pil",
]

OutputType = Literal["pil", "np", "pt", "latent"]
OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")
_SEED_RANGE = 2**63 - 1  # seeds drawn from a used generator lie in [0, 2**63 - 1)


@dataclass(frozen=True)
class GenerationOutput:
    """The result of a pipeline call: `.images` as diffusers returns them, plus what made them.

    It is also a sequence of its images (`out[0]`, `len(out)`, `for image in out`), so code
    written for the older list return value keeps working.

    Attributes:
        images: PIL images, a float32 numpy array [N, H, W, C] in [0, 1] ("np"), a float32
            tensor [N, C, H, W] in [0, 1] ("pt"), or the raw samples of the network ("latent").
        seeds: the seed of each image.
        prompts: the prompt of each image.
    """

    images: Any
    seeds: tuple[int, ...]
    prompts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        return self.images[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.images)


def expand_prompts(
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    per_prompt: int,
) -> tuple[list[str], list[str]]:
    """One prompt and one negative prompt per image, prompt-major (as diffusers orders them).

    Args:
        prompt: a prompt or a list of prompts.
        negative_prompt: None, one negative prompt for all, or one per prompt.
        per_prompt: images per prompt (`num_images_per_prompt`), >= 1.
    Returns:
        (prompts, negative prompts), each of length len(prompts) * per_prompt.
    Raises:
        ValueError: not strings, an empty list, a count mismatch, per_prompt < 1.
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if isinstance(negative_prompt, str) or negative_prompt is None:
        negatives = [negative_prompt or ""] * len(prompts)
    else:
        negatives = list(negative_prompt) if isinstance(negative_prompt, list | tuple) else []
        if len(negatives) != len(prompts) or not all(isinstance(n, str) for n in negatives):
            raise ValueError(
                f"negative_prompt must be a string or one string per prompt: {len(prompts)} "
                f"prompt(s), got {negative_prompt!r}"
            )
    if isinstance(per_prompt, bool) or not isinstance(per_prompt, int) or per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {per_prompt!r}")
    return (
        [p for p in prompts for _ in range(per_prompt)],
        [n for n in negatives for _ in range(per_prompt)],
    )


def _is_fresh(generator: torch.Generator) -> bool:
    """Whether `generator` is still at the state `manual_seed(initial_seed())` leaves."""
    fresh = torch.Generator(device=generator.device).manual_seed(generator.initial_seed())
    return torch.equal(fresh.get_state(), generator.get_state())


def _draw(generator: torch.Generator, count: int) -> list[int]:
    """`count` seeds from the generator's stream (advancing it)."""
    drawn = torch.randint(0, _SEED_RANGE, (count,), generator=generator, device=generator.device)
    return drawn.tolist()


def seeds_from_generators(
    generator: torch.Generator | Sequence[torch.Generator], count: int
) -> list[int]:
    """The per-image seeds a diffusers-style `generator` argument stands for (module docstring).

    Args:
        generator: one generator for all images, or one per image.
        count: the number of images.
    Returns:
        `count` seeds; every generator is advanced.
    Raises:
        ValueError: a list whose length is not `count`, or something that is not a generator.
    """
    if isinstance(generator, torch.Generator):
        if _is_fresh(generator):
            first = generator.initial_seed()
            _draw(generator, 1)  # advance, so the next call differs, as in diffusers
            return [(first + i) % (2**63) for i in range(count)]
        return _draw(generator, count)
    generators = list(generator)
    if len(generators) != count:
        raise ValueError(f"{len(generators)} generators given for {count} images")
    if not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(
            f"generator must be a torch.Generator or a list of them, got {generator!r}"
        )
    return [seeds_from_generators(g, 1)[0] for g in generators]


def to_pil(images: Tensor) -> list[Image.Image]:
    """Images [N, C, H, W] in [-1, 1] -> PIL images (uint8, round to nearest)."""
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in to_uint8(images)]


def convert_images(images: Tensor, output_type: str) -> Any:
    """Decoded images [N, C, H, W] in [-1, 1] as `output_type` ("pil", "np" or "pt").

    "np" and "pt" are float32 in [0, 1] (diffusers' convention): numpy [N, H, W, C] and torch
    [N, C, H, W] on the CPU. ("latent" never reaches here: the pipeline returns its samples.)
    """
    if output_type == "pil":
        return to_pil(images)
    unit = ((images.float().clamp(-1, 1) + 1) / 2).cpu()
    if output_type == "pt":
        return unit
    if output_type == "np":
        return np.ascontiguousarray(unit.permute(0, 2, 3, 1).numpy())
    raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
