"""Text-to-video and image-to-video with a video model (an image model inflated with temporal
layers and trained on clips, `nets.inflate`).

    pipe = load_video_pipeline("models/moving-shapes-t2v")
    clips = pipe.generate(pipe.params("a red circle moving to the right", frames=16))
    # clips: [N, 3, T, H, W] in [-1, 1]

A clip is one more axis of the same sampling: the sampler, classifier-free guidance (one
batched network call, the negative prompt as the unconditional branch) and the per-seed noise
are those of text-to-image, on latents of shape (C, T, h, w); the codec decodes frame by
frame. Image-to-video gives the network the encoded start image as its first-frame input and
keeps frame 0 on that latent after every step (the replacement of `samplers.inpaint`), so the
clip starts on the given picture. Every clip depends only on its seed, never on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffuse.nets.temporal import fold_frames, unfold_frames
from diffuse.pipelines.image_to_image import image_hash, read_image, sample_from
from diffuse.pipelines.sample import to_uint8
from diffuse.pipelines.text_to_image import TextToImagePipeline, load_pipeline
from diffuse.samplers.base import Callback
from diffuse.samplers.inpaint import KnownRegion
from diffuse.samplers.noise import SeededNoise
from diffuse.samplers.registry import get_sampler, get_schedule

__all__ = [
    "DEFAULT_VIDEO_MODEL",
    "VideoParams",
    "VideoPipeline",
    "clip_frames_uint8",
    "default_video_model_dir",
    "load_video_pipeline",
]

DEFAULT_VIDEO_MODEL = "moving-shapes-t2v"


def default_video_model_dir() -> Path:
    """The shipped video model: models/moving-shapes-t2v of the source checkout the package
    runs from (it is not packaged: the wheel carries only the image model).

    Raises:
        FileNotFoundError: no such folder, saying how to name one.
    """
    folder = Path(__file__).resolve().parents[3] / "models" / DEFAULT_VIDEO_MODEL
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no video model at {folder} (it ships in the source tree only); pass --model DIR"
        )
    return folder


@dataclass(frozen=True)
class VideoParams:
    """Everything that determines the clips of one call; stored with every clip written."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    frames: int
    sampler: str
    schedule: str
    steps: int
    guidance: float
    size: int
    model: str
    model_hash: str
    image_hash: str = ""  # of the start image's pixels (image-to-video), "" for text-to-video

    def for_seed(self, seed: int) -> dict[str, Any]:
        """The parameters of the clip of one seed, as a JSON-ready dict."""
        extra = {"image_hash": self.image_hash} if self.image_hash else {}
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": int(seed),
            "frames": self.frames,
            "sampler": self.sampler,
            "schedule": self.schedule,
            "steps": self.steps,
            "guidance": self.guidance,
            "size": self.size,
            "model": self.model,
            "model_hash": self.model_hash,
        } | extra


class VideoPipeline:
    """A text-conditioned video model with its text encoder and codec.

    Args:
        base: the model loaded as a text-to-image pipeline (folder, encoder, conditioning,
            request checks); its network must be a video network.
    Raises:
        ValueError: the model's network is not a video network.
    """

    def __init__(self, base: TextToImagePipeline) -> None:
        net_cfg = base.model.denoiser.net.config
        if not getattr(net_cfg, "temporal", False) and not getattr(net_cfg, "frames", 0):
            raise ValueError(
                f"{base.model.folder} is an image model (its network has no temporal layers); "
                "use `diffuse generate`"
            )
        self.base = base
        self.max_frames = int(getattr(net_cfg, "max_frames", 0) or net_cfg.frames)
        self.takes_image = bool(getattr(net_cfg, "first_frame", False))

    @property
    def name(self) -> str:
        """The model's name."""
        return self.base.name

    @property
    def size(self) -> int:
        """Frame side in pixels."""
        return self.base.size

    def params(
        self,
        prompt: str,
        negative_prompt: str = "",
        *,
        frames: int | None = None,
        seeds: Sequence[int] | None = None,
        sampler: str | None = None,
        schedule: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        image: Tensor | None = None,
    ) -> VideoParams:
        """Check a request and fill in the model's defaults.

        Args:
            frames: clip length, 1 .. the model's max_frames (default: max_frames).
            image: the start image [1, 3, H, W] in [-1, 1] (`read_start_image`), or None.
        Raises:
            ValueError: naming the bad value (frames, seeds, steps, guidance, sampler...).
        """
        frames = self.max_frames if frames is None else int(frames)
        if not 1 <= frames <= self.max_frames:
            raise ValueError(
                f"frames must be in 1..{self.max_frames} (model {self.name!r} takes clips of "
                f"at most {self.max_frames} frames), got {frames}"
            )
        if image is not None and not self.takes_image:
            raise ValueError(
                f"model {self.name!r} does not take a start image (text-to-video only)"
            )
        if sampler == "fitted" or schedule == "fitted":
            raise ValueError("fitted solvers are for image models; name a sampler")
        checked = self.base.params(
            prompt,
            negative_prompt,
            seeds=seeds,
            sampler=sampler or self.base.defaults.sampler,
            schedule=schedule or self.base.defaults.schedule,
            steps=steps,
            guidance=guidance,
        )
        return VideoParams(
            prompt=checked.prompt,
            negative_prompt=checked.negative_prompt,
            seeds=checked.seeds,
            frames=frames,
            sampler=checked.sampler,
            schedule=checked.schedule,
            steps=checked.steps,
            guidance=checked.guidance,
            size=checked.size,
            model=checked.model,
            model_hash=checked.model_hash,
            image_hash="" if image is None else _tensor_hash(image),
        )

    def read_start_image(self, image: str | Path | Image.Image | np.ndarray) -> Tensor:
        """A start image as [1, 3, H, W] in [-1, 1] (no resizing: another size is an error).

        Raises:
            ValueError: another size than the model's frames, an unreadable file, or a model
                without image-to-video. FileNotFoundError: no such file.
        """
        if not self.takes_image:
            raise ValueError(
                f"model {self.name!r} does not take a start image (text-to-video only)"
            )
        tensor, _ = read_image(image, self.size, 3)
        return tensor

    @torch.no_grad()
    def generate(
        self,
        params: VideoParams,
        image: Tensor | None = None,
        callback: Callback | None = None,
        decode: bool = True,
        prompts: Sequence[str] | None = None,
    ) -> Tensor:
        """Clips [N, 3, T, H, W] in [-1, 1] (latents [N, C, T, h, w] with decode=False).

        Args:
            params: checked parameters (`params`); `image` must be the one they were made for.
            image: the start image [1, 3, H, W] in [-1, 1] for image-to-video.
            callback: the sampler callback (progress bar), called after every step.
            prompts: one prompt per seed, replacing `params.prompt` (many prompts in one
                batch; each clip still depends only on its prompt and seed).
        """
        if prompts is not None and len(prompts) != len(params.seeds):
            raise ValueError(f"{len(prompts)} prompts for {len(params.seeds)} seeds")
        if (image is None) != (not params.image_hash) or (
            image is not None and _tensor_hash(image) != params.image_hash
        ):
            raise ValueError("the start image is not the one these parameters were made for")
        model, device = self.base.model, self.base.device
        denoiser = model.denoiser
        channels, size = model.shape[0], model.shape[-1]
        shape = (channels, params.frames, size, size)
        cond = self.base.conditioning(list(prompts or [params.prompt]))
        uncond = self.base.conditioning([params.negative_prompt])
        known = None
        if image is not None:
            known = model.codec.encode(image.to(device)).float()  # [1, C, h, w]
            cond, uncond = cond | {"first_frame": known}, uncond | {"first_frame": known}
        levels = get_schedule(params.schedule)(denoiser.process, params.steps)
        sample_fn = get_sampler(params.sampler)
        top = float(levels[0])
        regions: dict[int, Callback | None] = {}

        def starts(noise: SeededNoise, start: int, count: int) -> Tensor:
            eps = noise.initial(shape)  # [count, C, T, h, w]
            regions[start] = callback
            if known is None:
                return eps * top
            # Frame 0 is kept on the start image's latent, at the level the sample sits at.
            clean = torch.zeros_like(eps)
            clean[:, :, 0] = known
            mask = torch.ones(1, 1, params.frames, 1, 1, device=eps.device, dtype=eps.dtype)
            mask[:, :, 0] = 0
            regions[start] = KnownRegion(clean, mask, eps, then=callback)
            return torch.where(mask.bool(), eps * top, clean + top * eps)

        def run(denoise, x, noise, start, count) -> Tensor:  # noqa: ANN001
            return sample_fn(denoise, x, levels, noise=noise, callback=regions.pop(start))

        latents = sample_from(
            denoiser,
            starts,
            params.seeds,
            run,
            cond={k: v.to(device) for k, v in cond.items()},
            uncond={k: v.to(device) for k, v in uncond.items()},
            guidance=params.guidance,
            device=device,
        )
        if not decode:
            return latents
        return self.decode(latents)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latent clips [N, C, T, h, w] -> clips [N, 3, T, H, W] in [-1, 1], frame by frame."""
        frames = latents.shape[2]
        images = self.base.model.decode(fold_frames(latents))
        return unfold_frames(images, frames)


def clip_frames_uint8(clip: Tensor) -> np.ndarray:
    """One clip [3, T, H, W] in [-1, 1] as uint8 frames [T, H, W, 3]."""
    return to_uint8(clip.transpose(0, 1))


def _tensor_hash(image: Tensor) -> str:
    """`image_hash` of a start image tensor [1, 3, H, W] in [-1, 1] (of its uint8 pixels)."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"start image must be [1, 3, H, W], got {tuple(image.shape)}")
    return image_hash(to_uint8(image)[0])


def load_video_pipeline(model: str | Path, device: str = "cpu") -> VideoPipeline:
    """Load a video model folder (what `diffuse train` writes for a clip recipe).

    Raises:
        FileNotFoundError: no model there. ValueError: not a text-conditioned video model.
    """
    return VideoPipeline(load_pipeline(model, device=device))
