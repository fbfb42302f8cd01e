"""The server's settings: authentication, the queue bound and the per-request caps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    """Everything `create_app` needs to know besides the models.

    Attributes:
        token: the bearer token every route but the page needs (None: no authentication).
        batching: share network calls across requests (False: one request at a time).
        max_queue: jobs waiting or running per model; past it a request gets 429.
        max_batch_images: images one model's worker samples at once (batching on).
        max_steps: the largest `steps` a request may ask for.
        max_images: the most images one request may ask for.
        max_prompt_chars: the longest prompt or negative prompt, in characters.
        max_body_bytes: the largest request body (413 past it).
        max_upload_bytes: the largest image file one field of a request may carry (413 past
            it, naming the field); the body limit holds as well.
        keep_jobs: finished jobs kept for GET /api/jobs/{id} (the oldest go first).
        shutdown_grace: seconds running jobs get to finish at shutdown before they are
            cancelled.
    """

    token: str | None = None
    batching: bool = True
    max_queue: int = 64
    max_batch_images: int = 64
    max_steps: int = 100
    max_images: int = 8
    max_prompt_chars: int = 1000
    max_body_bytes: int = 65536
    max_upload_bytes: int = 32768
    keep_jobs: int = 256
    shutdown_grace: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_queue",
            "max_batch_images",
            "max_steps",
            "max_images",
            "max_prompt_chars",
            "max_body_bytes",
            "max_upload_bytes",
            "keep_jobs",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.shutdown_grace >= 0:
            raise ValueError(f"shutdown_grace must be >= 0 seconds, got {self.shutdown_grace!r}")
        if self.token is not None and not self.token:
            raise ValueError("token must not be empty")
