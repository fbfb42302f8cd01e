"""The JSON bodies of the API, as pydantic models (FastAPI derives the OpenAPI schema from them).

The request model is built per server (`text_to_image_request`) so that the caps of its
settings (steps, images, prompt length) and the names its models accept appear in the schema
and are checked before anything runs; a bad value is answered 422 with a message naming the
field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from diffuse.nets.controlnet import CONTROL_KINDS
from diffuse.samplers.inversion import INVERSIONS
from diffuse.samplers.registry import SAMPLERS, SCHEDULES
from diffuse.server.settings import ServerSettings
from diffuse.server.uploads import encoded_length

SEED_LIMIT = 2**63  # seeds are in [0, 2**63), as the CLI's
MAX_RESAMPLE = 20  # RePaint's resampling multiplies a step's network calls
MAX_REFINE = 20  # fixed-point iterations per inversion step
MAX_FEATHER = 256  # seam width in pixels


def _generation_fields(
    settings: ServerSettings, models: list[str], *, sampler: bool = True
) -> dict[str, Any]:
    """The fields of every job: the settings of `diffuse generate` (unset: the model's)."""
    fields: dict[str, Any] = {
        "model": (
            Literal[tuple(models)] | None,  # type: ignore[valid-type]
            Field(None, description="model name (GET /api/models); default: the first"),
        ),
        "prompt": (
            str,
            Field("", max_length=settings.max_prompt_chars, description="the prompt"),
        ),
        "negative_prompt": (
            str,
            Field("", max_length=settings.max_prompt_chars, description="the negative prompt"),
        ),
        "seeds": (
            list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]] | None,
            Field(None, min_length=1, max_length=settings.max_images, description="one per image"),
        ),
        "n": (
            int | None,
            Field(None, ge=1, le=settings.max_images, description="images (seeds 0..n-1)"),
        ),
        "sampler": (Literal[tuple(SAMPLERS)] | None, None),  # type: ignore[valid-type]
        "schedule": (Literal[tuple(SCHEDULES)] | None, None),  # type: ignore[valid-type]
        "steps": (int | None, Field(None, ge=1, le=settings.max_steps)),
        "guidance": (float | None, Field(None, ge=0, le=100, allow_inf_nan=False)),
        "size": (int | None, Field(None, ge=1, le=4096, description="image side in pixels")),
    }
    if not sampler:
        del fields["sampler"]
    return fields


def _request(name: str, doc: str, fields: dict[str, Any]) -> type[BaseModel]:
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


def _upload(settings: ServerSettings, what: str, example: str | None) -> tuple[type, Any]:
    """A required image field: base64 of the file, or a data: URL."""
    return (
        str,
        Field(
            min_length=1,
            max_length=encoded_length(settings.max_upload_bytes),
            description=f"{what}: base64 of a PNG (or JPEG, WebP, BMP) file of the model's size, "
            f"or a data: URL; at most {settings.max_upload_bytes} bytes",
            examples=[example] if example else None,
        ),
    )


def text_to_image_request(settings: ServerSettings, models: list[str]) -> type[BaseModel]:
    """The body of POST /api/jobs/text-to-image for a server with these settings and models."""
    return _request(
        "TextToImageRequest",
        "A text-to-image job: every setting of `diffuse generate` (unset: the model's default).",
        _generation_fields(settings, models),
    )


def img2img_request(
    settings: ServerSettings, models: list[str], example: str | None = None
) -> type[BaseModel]:
    """The body of POST /api/jobs/img2img (`diffuse edit IMAGE PROMPT --strength S`)."""
    return _request(
        "Img2ImgRequest",
        "An img2img (SDEdit) job: the image is noised to the level `strength` picks and sampled "
        "back with the prompt; every setting of `diffuse edit`.",
        _generation_fields(settings, models)
        | {
            "image": _upload(settings, "the input image", example),
            "strength": (
                float,
                Field(0.6, gt=0, le=1, allow_inf_nan=False, description="1 redraws everything"),
            ),
        },
    )


def inversion_request(
    settings: ServerSettings, models: list[str], example: str | None = None
) -> type[BaseModel]:
    """The body of POST /api/jobs/inversion (`diffuse edit IMAGE PROMPT --invert --source S`)."""
    return _request(
        "InversionRequest",
        "An edit by inversion: the image is inverted deterministically with `source_prompt` (its "
        "description) and sampled back with the prompt, keeping what both share; the sampler is "
        "the one matching `inversion`. Every setting of `diffuse edit --invert`.",
        _generation_fields(settings, models, sampler=False)
        | {
            "image": _upload(settings, "the input image", example),
            "source_prompt": (
                str,
                Field(max_length=settings.max_prompt_chars, description="describes the image"),
            ),
            "inversion": (
                Literal[tuple(INVERSIONS)],  # type: ignore[valid-type]
                Field("ddim", description="inversion method; its sampler samples back"),
            ),
            "refine": (
                int,
                Field(0, ge=0, le=MAX_REFINE, description="fixed-point iterations (ddim only)"),
            ),
            "source_guidance": (
                float,
                Field(
                    1.0,
                    ge=0,
                    le=100,
                    allow_inf_nan=False,
                    description="guidance of the inversion (1: unguided, the exact inverse)",
                ),
            ),
        },
    )


def inpaint_request(
    settings: ServerSettings,
    models: list[str],
    example: str | None = None,
    mask_example: str | None = None,
) -> type[BaseModel]:
    """The body of POST /api/jobs/inpaint (`diffuse inpaint IMAGE --mask MASK PROMPT`)."""
    return _request(
        "InpaintRequest",
        "An inpainting job (training-free, any model): the region the mask marks white is "
        "filled following the prompt, the black region comes back exactly (beyond `feather` "
        "pixels). Every setting of `diffuse inpaint`.",
        _generation_fields(settings, models)
        | {
            "image": _upload(settings, "the input image", example),
            "mask": _upload(
                settings,
                "the mask, binary (0 and 255 only): white = fill, black = keep",
                mask_example,
            ),
            "resample": (
                int,
                Field(1, ge=1, le=MAX_RESAMPLE, description="RePaint: times each step is taken"),
            ),
            "feather": (
                int,
                Field(0, ge=0, le=MAX_FEATHER, description="seam width in pixels (0: exact)"),
            ),
        },
    )


def controlnet_request(
    settings: ServerSettings,
    models: list[str],
    controlnets: list[str],
    example: str | None = None,
) -> type[BaseModel]:
    """The body of POST /api/jobs/controlnet (`diffuse generate --controlnet DIR --control
    IMAGE`)."""
    names: Any = Literal[tuple(controlnets)] if controlnets else str  # type: ignore[valid-type]
    return _request(
        "ControlNetRequest",
        "Text-to-image steered by a ControlNet the server was started with: the control map of "
        "its kind is computed from `control_image`. Every setting of `diffuse generate "
        "--controlnet`.",
        _generation_fields(settings, models)
        | {
            "controlnet": (
                names | None,
                Field(
                    None,
                    max_length=200,
                    description="a ControlNet of the model (GET /api/models); default: the "
                    "model's first of `control_kind`",
                ),
            ),
            "control_kind": (
                Literal[tuple(CONTROL_KINDS)] | None,  # type: ignore[valid-type]
                Field(None, description="the control kind; must be the ControlNet's"),
            ),
            "control_image": _upload(settings, "the picture the control map is made from", example),
            "control_scale": (
                float,
                Field(1.0, ge=0, le=100, allow_inf_nan=False, description="0 = the base model"),
            ),
            "control_start": (
                float,
                Field(1.0, gt=0, le=1, allow_inf_nan=False, description="strength it starts at"),
            ),
            "control_end": (
                float,
                Field(0.0, ge=0, lt=1, allow_inf_nan=False, description="strength it stops at"),
            ),
        },
    )


class ImageView(BaseModel):
    """One finished image."""

    index: int
    seed: int
    url: str = Field(description="the PNG, with its parameters embedded")
    params: dict[str, Any]
    png_base64: str | None = Field(None, description="the PNG, when asked for with base64=true")


class JobView(BaseModel):
    """A job as GET /api/jobs/{id} shows it."""

    id: str
    kind: str
    model: str
    status: Literal["queued", "running", "done", "cancelled", "failed"]
    queue_position: int | None = Field(None, description="jobs ahead of this one while queued")
    step: int
    steps: int
    params: dict[str, Any]
    error: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    images: list[ImageView] = []
    events_url: str
    preview_url: str | None = None


class ModelView(BaseModel):
    """A model and its settings."""

    name: str
    model_hash: str
    size: int
    tasks: list[str]
    defaults: dict[str, Any]
    samplers: list[str]
    schedules: list[str]
    limits: dict[str, int]
    stats: dict[str, float]
    controlnets: list[dict[str, str]] = Field(
        default=[], description="the ControlNets of this model: name and kind"
    )


class ErrorView(BaseModel):
    """Every error: a one-line message naming the bad value."""

    error: str
