"""The JSON bodies of the API, as pydantic models (FastAPI derives the OpenAPI schema from them).

The request model is built per server (`text_to_image_request`) so that the caps of its
settings (steps, images, prompt length) and the names its models accept appear in the schema
and are checked before anything runs; a bad value is answered 422 with a message naming the
field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from diffuse.samplers.registry import SAMPLERS, SCHEDULES
from diffuse.server.settings import ServerSettings

SEED_LIMIT = 2**63  # seeds are in [0, 2**63), as the CLI's


def text_to_image_request(settings: ServerSettings, models: list[str]) -> type[BaseModel]:
    """The body of POST /api/jobs/text-to-image for a server with these settings and models."""
    return create_model(
        "TextToImageRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="A text-to-image job: every setting of `diffuse generate` (unset: the model's "
        "default).",
        model=(
            Literal[tuple(models)] | None,  # type: ignore[valid-type]
            Field(None, description="model name (GET /api/models); default: the first"),
        ),
        prompt=(str, Field("", max_length=settings.max_prompt_chars, description="the prompt")),
        negative_prompt=(
            str,
            Field("", max_length=settings.max_prompt_chars, description="the negative prompt"),
        ),
        seeds=(
            list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]] | None,
            Field(None, min_length=1, max_length=settings.max_images, description="one per image"),
        ),
        n=(
            int | None,
            Field(None, ge=1, le=settings.max_images, description="images (seeds 0..n-1)"),
        ),
        sampler=(Literal[tuple(SAMPLERS)] | None, None),  # type: ignore[valid-type]
        schedule=(Literal[tuple(SCHEDULES)] | None, None),  # type: ignore[valid-type]
        steps=(int | None, Field(None, ge=1, le=settings.max_steps)),
        guidance=(float | None, Field(None, ge=0, le=100, allow_inf_nan=False)),
        size=(int | None, Field(None, ge=1, le=4096, description="image side in pixels")),
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


class ErrorView(BaseModel):
    """Every error: a one-line message naming the bad value."""

    error: str
