"""Jobs: one request's state as the worker advances it, and the store the routes read.

A job is written by its model's worker thread and read by the event loop's handlers. Writes go
through methods that take the job's lock and then wake every handler waiting on the job
(`changed`), from the worker's thread into the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from diffuse.guidance import CondDenoiseFn
from diffuse.pipelines.text_to_image import EditParams, GenerationParams
from diffuse.samplers.base import Callback
from diffuse.samplers.stepwise import CallFn


class JobStatus(str, enum.Enum):
    """Where a job stands; the last three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """True for done, cancelled and failed."""
        return self in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED)


@dataclass(frozen=True)
class JobImage:
    """One finished image: its seed, its parameters (as stored in the PNG) and the PNG."""

    seed: int
    params: dict[str, Any]
    png: bytes


_ORDER = itertools.count()


JobBody = Callable[[CallFn, Callback, Callable[[Tensor], Tensor]], Tensor]
"""body(network, callback, decoder) -> images [N, C, H, W] in [-1, 1]: the task itself, run by
the worker as a `StepwiseRun` (e.g. `TextToImagePipeline.generate` with `network=`,
`callback=` and `decoder=`); it must call the model only through `network` and decode its
samples only through `decoder`."""


class Job:
    """One generation request.

    Args:
        kind: the task (the route's name: "text-to-image", "img2img", "inpaint"...).
        params: the checked parameters: a `GenerationParams`, or the `EditParams` of a task
            that starts from an image (stored per seed in each PNG).
        body: what computes the images (see `JobBody`); the worker knows no task.
        extra: more parameters every PNG of the job stores (a ControlNet's settings).
        network: network(x, level, cond) the worker answers this job's calls with, when not
            the model's own (a ControlNet-steered copy); jobs sharing one share calls.
    """

    def __init__(
        self,
        kind: str,
        params: GenerationParams | EditParams,
        body: JobBody,
        *,
        extra: dict[str, Any] | None = None,
        network: CondDenoiseFn | None = None,
    ) -> None:
        self.id = secrets.token_hex(8)
        self.kind = kind
        self.params = params
        self.generation = params.generation if isinstance(params, EditParams) else params
        self.extra = dict(extra or {})
        self.body = body
        self.network = network
        self.order = next(_ORDER)
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.status = JobStatus.QUEUED
        self.step = 0
        self.steps = params.steps_total if isinstance(params, EditParams) else params.steps
        self.error: str | None = None
        self.images: list[JobImage] = []
        self.preview: bytes | None = None
        self.preview_step = 0
        self.version = 0  # bumped at every change
        self.watchers = 0  # open event streams (previews are made only while one is open)
        self.cancel_requested = False
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def model(self) -> str:
        """The name of the job's model."""
        return self.generation.model

    @property
    def seeds(self) -> tuple[int, ...]:
        """One seed per image."""
        return self.generation.seeds

    def record(self, seed: int) -> dict[str, Any]:
        """The parameters of the image of `seed`, as its PNG stores them."""
        return self.params.for_seed(seed) | self.extra

    # --- written by the worker ---------------------------------------------------------------

    def _changed(self) -> None:
        """Bump the version and wake the waiting handlers (called with the lock held)."""
        self.version += 1
        for loop, event in list(self._waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed; its handler is gone
                self._waiters.discard((loop, event))

    def start(self) -> None:
        """The worker took the job."""
        with self._lock:
            self.status, self.started = JobStatus.RUNNING, time.time()
            self._changed()

    def progress(self, preview: bytes | None) -> None:
        """One more sampler step is done; `preview` (a PNG of the x0 estimate) or None."""
        with self._lock:
            step = self.step = min(self.steps, self.step + 1)
            if preview is not None:
                self.preview, self.preview_step = preview, step
            self._changed()

    def finish(
        self, status: JobStatus, images: list[JobImage] | None = None, error: str | None = None
    ) -> None:
        """The job ends as `status` (done with its images, cancelled, or failed with `error`)."""
        with self._lock:
            if self.status.final:
                return
            self.status, self.finished, self.error = status, time.time(), error
            self.images = images or []
            if status is JobStatus.DONE:
                self.step = self.steps
            self._changed()

    # --- asked for by the handlers -----------------------------------------------------------

    def request_cancel(self) -> None:
        """Ask the worker to cancel the job (it acts at its next tick)."""
        with self._lock:
            self.cancel_requested = True
            self._changed()

    async def changed(self, version: int, timeout: float) -> None:
        """Return once the job's version differs from `version`, or after `timeout` seconds."""
        event = asyncio.Event()
        key = (asyncio.get_running_loop(), event)
        with self._lock:
            if self.version != version:
                return
            self._waiters.add(key)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            pass
        finally:
            with self._lock:
                self._waiters.discard(key)


class JobStore:
    """Jobs by id; finished jobs beyond `keep` are dropped, the oldest first."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        """Store a new job, dropping the oldest finished jobs past the limit."""
        with self._lock:
            self._jobs[job.id] = job
            finished = [j.id for j in self._jobs.values() if j.status.final]
            for old in finished[: max(0, len(finished) - self.keep)]:
                del self._jobs[old]

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        """Every stored job, oldest first."""
        with self._lock:
            return list(self._jobs.values())
