"""One worker thread per model: it owns the network and advances every admitted job a step.

Each admitted job runs its task's pipeline method (`TextToImagePipeline.generate`, or
`run_edit` for img2img, inversion and inpainting) as a `samplers.stepwise.StepwiseRun`, paused
at every network call. A tick of the worker collects the pending call of every running job,
answers them with as few network calls as the conditioning shapes allow
(`pipelines.step_batching.run_calls`; a ControlNet job's calls go to its steered network, shared
by the jobs with the same ControlNet settings), and lets each job go on to its next call. A job
that arrives while others run joins at the next tick at its own first step, with its own
prompt, seed, step count, guidance scale and sampler; it gets exactly the pixels it would get
alone. Edit jobs join as they are: img2img is sampling from a lower start level, inpainting
pastes its known region in its own callback between calls, inversion is two loops of calls.
A job that has sampled pauses on the decode of its samples, and so does a preview: the decodes
a tick reaches are made in one call of the model's decode (`step_batching.run_decodes`).
With batching off the worker admits one job at a time, which is how requests are served one by
one.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass

import torch
from PIL import Image

from diffuse.pipelines.call_conventions import to_pil
from diffuse.pipelines.sample import invariant_network, to_grid
from diffuse.pipelines.step_batching import (
    DecodeCall,
    ragged_context_ok,
    run_calls,
    run_decodes,
)
from diffuse.pipelines.text_to_image import TextToImagePipeline
from diffuse.pngmeta import png_bytes
from diffuse.samplers.base import StepInfo
from diffuse.samplers.stepwise import RunCancelled, StepwiseRun, pause
from diffuse.server.jobs import Job, JobImage, JobStatus
from diffuse.server.settings import ServerSettings

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue is at its bound; `retry_after` is a estimate in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server is shutting down and takes no new jobs."""


@dataclass
class _Running:
    job: Job
    run: StepwiseRun


@dataclass
class WorkerStats:
    """Counters of one worker: network calls made, rows they carried, decode calls, jobs
    finished, and the seconds spent in network calls, in decodes (finished jobs and previews),
    in the jobs' own steps (sampler arithmetic, inpainting's paste, preview PNGs) and in
    starting jobs (prompt encoding)."""

    network_calls: int = 0
    rows: int = 0
    decode_calls: int = 0
    jobs_finished: int = 0
    network_seconds: float = 0.0
    decode_seconds: float = 0.0
    step_seconds: float = 0.0
    start_seconds: float = 0.0


def decode_in_tick(samples: torch.Tensor) -> torch.Tensor:
    """A job's decoder: its run pauses on the decode, which the worker makes together with the
    other decodes of the tick."""
    return pause(DecodeCall(samples))


class ModelWorker:
    """The thread that owns one model's network.

    Args:
        pipe: the model.
        settings: queue bound, batch cap, batching on or off.
    """

    def __init__(self, pipe: TextToImagePipeline, settings: ServerSettings) -> None:
        self.pipe = pipe
        self.settings = settings
        self.stats = WorkerStats()
        self._network = invariant_network(pipe.model.denoiser)
        self._ragged = ragged_context_ok(pipe.model.denoiser.net)
        self._queue: collections.deque[Job] = collections.deque()
        self._running: list[_Running] = []  # touched by the worker thread only
        self._in_flight = 0  # jobs admitted and not yet finished (under the lock)
        self._cond = threading.Condition()
        self._stopping = False
        self._abort = False
        self._interval = 1.0  # moving average of seconds between finished jobs (Retry-After)
        self._last_finish: float | None = None
        self._thread = threading.Thread(target=self._loop, name=f"worker-{pipe.name}", daemon=True)

    # --- called from the event loop ----------------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job.

        Raises:
            ShuttingDown: the worker is stopping.
            QueueFull: `max_queue` jobs are already waiting or running.
        """
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) + self._in_flight >= self.settings.max_queue:
                raise QueueFull(max(1, min(60, math.ceil(self._interval))))
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """Cancel a job: at once if it still waits, at the next tick if it runs."""
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                job.finish(JobStatus.CANCELLED, error="cancelled")
                return
            job.request_cancel()
            self._cond.notify_all()

    def position(self, job: Job) -> int | None:
        """How many jobs wait before this one (None unless it waits)."""
        with self._cond:
            try:
                return self._queue.index(job)
            except ValueError:
                return None

    def stop(self, grace: float) -> None:
        """Take no new jobs, let the accepted ones finish for up to `grace` seconds, then cancel
        what is left; returns when the thread has ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(grace)
        with self._cond:
            self._abort = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        for job in list(self._queue):  # never started (the thread may not have run at all)
            job.finish(JobStatus.CANCELLED, error="the server shut down")
        self._queue.clear()

    # --- the worker thread -------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.no_grad():
            while self._tick():
                pass

    def _tick(self) -> bool:
        """Admit, cancel, advance every running job by one network call; False to end."""
        with self._cond:
            while not (self._queue or self._running or self._stopping):
                self._cond.wait()
            if self._abort:
                self._shut_down()
                return False
            if self._stopping and not (self._queue or self._running):
                return False
            admitted = self._admit()
        started = time.perf_counter()
        for job in admitted:
            self._begin(job)
        self.stats.start_seconds += time.perf_counter() - started
        for item in self._running:
            if item.job.cancel_requested and not item.run.done:
                item.run.cancel()
        self._decode()
        self._reap()
        live = [item for item in self._running if not item.run.done]
        if not live:
            return True
        started = time.perf_counter()
        try:
            outputs = self._answer(live)
        except Exception as error:  # a network failure fails the jobs, never the server
            self._fail(live, "network call failed", error)
            return True
        self.stats.network_seconds += time.perf_counter() - started
        self._advance(live, outputs)
        self._decode()
        self._reap()
        return True

    def _advance(self, items: list[_Running], outputs: list[torch.Tensor]) -> None:
        """Answer each item's pending call; the jobs' own arithmetic runs side by side until
        each waits again or has ended."""
        started = time.perf_counter()
        for item, out in zip(items, outputs):
            item.run.resume(out)
        for item in items:
            item.run.settle()
        self.stats.step_seconds += time.perf_counter() - started

    def _decode(self) -> None:
        """Make the decodes the running jobs wait on (finished samples, previews) in one call,
        until none waits on one."""
        while waiting := [i for i in self._running if isinstance(i.run.call, DecodeCall)]:
            started = time.perf_counter()
            try:
                images = run_decodes(self.pipe.model.decode, [i.run.call for i in waiting])
            except Exception as error:  # as a network failure
                self._fail(waiting, "decode failed", error)
                return
            self.stats.decode_calls += 1
            self.stats.decode_seconds += time.perf_counter() - started
            self._advance(waiting, images)

    def _fail(self, items: list[_Running], what: str, error: Exception) -> None:
        """Fail the jobs of `items` after a failed network call or decode."""
        logger.exception(what)
        for item in items:
            item.run.cancel()
            item.job.finish(JobStatus.FAILED, error=f"{what}: {error}")
        self._running = [i for i in self._running if not i.job.status.final]
        with self._cond:
            self._in_flight = len(self._running)

    def _answer(self, live: list[_Running]) -> list[torch.Tensor]:
        """The outputs of the pending calls of `live`: the calls of jobs that run the same
        network (the model's, or one ControlNet-steered copy) share network calls."""
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(live):
            groups.setdefault(id(item.job.network), []).append(index)
        outputs: list[torch.Tensor | None] = [None] * len(live)
        for members in groups.values():
            network = live[members[0]].job.network or self._network
            calls = [live[i].run.call for i in members]
            for i, out in zip(members, run_calls(network, calls, self._count, self._ragged)):
                outputs[i] = out
        return outputs  # type: ignore[return-value]

    def _admit(self) -> list[Job]:
        """Jobs to start now (called with the lock held)."""
        admitted: list[Job] = []
        images = sum(len(item.job.seeds) for item in self._running)
        while self._queue:
            job = self._queue[0]
            count = len(job.seeds)
            if self._running or admitted:
                if not self.settings.batching:
                    break
                if images + count > self.settings.max_batch_images:
                    break
            admitted.append(self._queue.popleft())
            images += count
        self._in_flight += len(admitted)
        return admitted

    def _begin(self, job: Job) -> None:
        """Start a job's run: it encodes its prompts and pauses at its first network call."""
        job.start()

        callback = self._on_step(job)
        run = StepwiseRun(
            lambda network: job.body(network, callback, decode_in_tick), name=f"job-{job.id}"
        )
        self._running.append(_Running(job, run))

    def _on_step(self, job: Job):  # noqa: ANN202
        """The sampler callback of a job: progress, and a preview while someone watches."""

        def callback(info: StepInfo) -> None:
            preview = None
            if job.watchers > 0:
                images = decode_in_tick(info.denoised)
                grid = to_grid(images, nrow=images.shape[0], padding=0)
                preview = png_bytes(
                    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid), {}
                )
            job.progress(preview)

        return callback

    def _reap(self) -> None:
        """Finish the jobs whose runs have ended."""
        still = []
        for item in self._running:
            if not item.run.done:
                still.append(item)
                continue
            job = item.job
            try:
                images = item.run.result()
            except RunCancelled:
                job.finish(JobStatus.CANCELLED, error="cancelled")
            except Exception as error:
                logger.exception("job %s failed", job.id)
                job.finish(JobStatus.FAILED, error=str(error))
            else:
                pictures = to_pil(images)
                done = [
                    JobImage(seed, job.record(seed), png_bytes(picture, job.record(seed)))
                    for seed, picture in zip(job.seeds, pictures)
                ]
                job.finish(JobStatus.DONE, images=done)
            self._finished_one()
        self._running = still
        with self._cond:
            self._in_flight = len(still)

    def _finished_one(self) -> None:
        now = time.monotonic()
        if self._last_finish is not None:
            self._interval = 0.8 * self._interval + 0.2 * (now - self._last_finish)
        self._last_finish = now
        self.stats.jobs_finished += 1

    def _count(self, rows: int) -> None:
        self.stats.network_calls += 1
        self.stats.rows += rows

    def _shut_down(self) -> None:
        """Cancel everything (called with the lock held, once the grace period is over)."""
        for item in self._running:
            item.run.cancel()
            item.job.finish(JobStatus.CANCELLED, error="the server shut down")
        self._running = []
        self._in_flight = 0
        while self._queue:
            self._queue.popleft().finish(JobStatus.CANCELLED, error="the server shut down")
