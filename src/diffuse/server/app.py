"""The HTTP API and the page: FastAPI routes over the model workers.

    app = create_app({"shapes-t2i": load_pipeline()}, ServerSettings(token="..."))
    uvicorn.run(app, host="127.0.0.1", port=7860)        # what `diffuse serve` does

Routes (all JSON unless said; every one but the page needs the token when one is set):

    GET    /                               the page (HTML/JS shipped in the package)
    GET    /api/models                     models, their defaults, the caps
    POST   /api/jobs/text-to-image         queue a job: 202 and the job (?wait=true: 200 when
                                           finished, with ?base64=true the PNGs inline)
    GET    /api/jobs/{id}                  the job: status, step, images (?base64=true)
    DELETE /api/jobs/{id}                  cancel it
    GET    /api/jobs/{id}/images/{index}   a finished image: PNG with its parameters embedded
    GET    /api/jobs/{id}/preview          the latest x0 preview (PNG), while someone watches
    GET    /api/jobs/{id}/events           Server-Sent Events: progress with previews, the end
    GET    /openapi.json                   the schema

Jobs of other tasks (image-to-image, inpainting with a mask) get their own POST
/api/jobs/<task> route with their own request model, and hand the worker a `Job` whose body runs
their pipeline through the worker's `network`; the worker knows no task, and everything after
the POST (the job, its images, events, cancellation, batching with the other jobs) is shared.
`GET /api/models` lists each model's `tasks`.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time,
# and the request model is a local of create_app.

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from diffuse import __version__
from diffuse.pipelines.text_to_image import TextToImagePipeline
from diffuse.samplers.registry import SAMPLERS, SCHEDULES
from diffuse.server.jobs import Job, JobStatus, JobStore
from diffuse.server.schema import ErrorView, ImageView, JobView, ModelView, text_to_image_request
from diffuse.server.security import GuardMiddleware
from diffuse.server.settings import ServerSettings
from diffuse.server.worker import ModelWorker, QueueFull, ShuttingDown

TEXT_TO_IMAGE = "text-to-image"
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
JOB_ID = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="a job id")]
KEEP_ALIVE_SECONDS = 15.0
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorView} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}


def _static(name: str) -> bytes:
    return (resources.files("diffuse.server") / "static" / name).read_bytes()


def create_app(pipes: dict[str, TextToImagePipeline], settings: ServerSettings) -> FastAPI:
    """The ASGI application serving `pipes` (name -> model; the first is the default).

    The workers start with the application's lifespan and stop with it: accepted jobs get
    `settings.shutdown_grace` seconds to finish, then are cancelled.
    """
    if not pipes:
        raise ValueError("give at least one model")
    names = list(pipes)
    workers = {name: ModelWorker(pipe, settings) for name, pipe in pipes.items()}
    store = JobStore(settings.keep_jobs)
    page = _static("index.html")
    files = {name: _static(name) for name in STATIC}
    Request_ = text_to_image_request(settings, names)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for worker in workers.values():
            worker.start()
        yield
        await asyncio.gather(
            *(asyncio.to_thread(w.stop, settings.shutdown_grace) for w in workers.values())
        )

    app = FastAPI(
        title="diffuse",
        version=__version__,
        description="Text-to-image jobs with live previews; requests share network calls.",
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load scripts from a CDN: nothing is fetched
        redoc_url=None,
    )
    app.state.workers = workers
    app.state.store = store

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        message = f"{where or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse({"error": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    def view(job: Job, with_base64: bool = False) -> JobView:
        base = f"/api/jobs/{job.id}"
        images = [
            ImageView(
                index=i,
                seed=image.seed,
                url=f"{base}/images/{i}",
                params=image.params,
                png_base64=base64.b64encode(image.png).decode() if with_base64 else None,
            )
            for i, image in enumerate(job.images)
        ]
        return JobView(
            id=job.id,
            kind=job.kind,
            model=job.params.model,
            status=job.status.value,
            queue_position=workers[job.params.model].position(job),
            step=job.step,
            steps=job.steps,
            params=job_params(job),
            error=job.error,
            created=job.created,
            started=job.started,
            finished=job.finished,
            images=images,
            events_url=f"{base}/events",
            preview_url=f"{base}/preview" if job.preview is not None else None,
        )

    def find(job_id: str) -> Job:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:  # a fixed table: no path from the request reaches the disk
            raise HTTPException(404, f"no file {name!r}")
        return Response(files[name], media_type=STATIC[name])

    @app.get("/api/models", response_model=list[ModelView], responses=ERRORS)
    async def models() -> list[ModelView]:
        """The models served, each with its defaults, and this server's caps."""
        out = []
        for name, pipe in pipes.items():
            d = pipe.defaults
            stats = workers[name].stats
            out.append(
                ModelView(
                    name=name,
                    model_hash=pipe.model_hash,
                    size=pipe.size,
                    tasks=[TEXT_TO_IMAGE],
                    defaults={
                        "sampler": d.sampler,
                        "schedule": d.schedule,
                        "steps": d.steps,
                        "guidance": d.guidance,
                        "size": pipe.size,
                    },
                    samplers=list(SAMPLERS),
                    schedules=list(SCHEDULES),
                    limits={
                        "max_steps": settings.max_steps,
                        "max_images": settings.max_images,
                        "max_prompt_chars": settings.max_prompt_chars,
                        "max_body_bytes": settings.max_body_bytes,
                        "max_queue": settings.max_queue,
                    },
                    stats=dataclasses.asdict(stats),
                )
            )
        return out

    @app.post(
        "/api/jobs/text-to-image",
        status_code=202,
        response_model=JobView,
        response_model_exclude_none=True,
        responses={**ERRORS, 200: {"model": JobView, "description": "finished (wait=true)"}},
    )
    async def text_to_image(
        body: Request_,  # type: ignore[valid-type]
        wait: Annotated[bool, Query(description="answer when the job has finished")] = False,
        inline: Annotated[
            bool, Query(alias="base64", description="include the PNGs as base64")
        ] = False,
    ) -> Any:
        """Queue a text-to-image job. 429 with Retry-After when the queue is full."""
        name = body.model or names[0]
        pipe = pipes[name]
        try:
            params = pipe.params(
                body.prompt,
                body.negative_prompt,
                seeds=body.seeds,
                n=body.n,
                sampler=body.sampler,
                schedule=body.schedule,
                steps=body.steps,
                guidance=body.guidance,
                size=body.size,
            )
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        job = Job(
            TEXT_TO_IMAGE,
            params,
            lambda network, callback: pipe.generate(params, callback=callback, network=network),
        )
        try:
            workers[name].submit(job)
        except QueueFull as full:
            raise HTTPException(
                429, str(full), headers={"Retry-After": str(full.retry_after)}
            ) from None
        except ShuttingDown as down:
            raise HTTPException(503, str(down), headers={"Retry-After": "5"}) from None
        store.add(job)
        if not wait:
            return JSONResponse(
                view(job).model_dump(exclude_none=True),
                status_code=202,
                headers={"Location": f"/api/jobs/{job.id}"},
            )
        while not job.status.final:
            await job.changed(job.version, KEEP_ALIVE_SECONDS)
        return JSONResponse(view(job, inline).model_dump(exclude_none=True), status_code=200)

    @app.get(
        "/api/jobs/{job_id}",
        response_model=JobView,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def get_job(
        job_id: JOB_ID,
        inline: Annotated[
            bool, Query(alias="base64", description="include the PNGs as base64")
        ] = False,
    ) -> JobView:
        """A job's status, progress and (when done) its images."""
        return view(find(job_id), inline)

    @app.delete(
        "/api/jobs/{job_id}",
        response_model=JobView,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def cancel_job(job_id: JOB_ID) -> JobView:
        """Cancel a job (a finished job stays as it is)."""
        job = find(job_id)
        if not job.status.final:
            workers[job.params.model].cancel(job)
        return view(job)

    @app.get(
        "/api/jobs/{job_id}/images/{index}",
        response_class=Response,
        responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    )
    async def image(job_id: JOB_ID, index: Annotated[int, Path(ge=0, le=1000)]) -> Response:
        """A finished image as PNG, its parameters in the "diffuse" text chunk."""
        job = find(job_id)
        if job.status is not JobStatus.DONE:
            raise HTTPException(409, f"job {job_id} is {job.status.value}, not done")
        if index >= len(job.images):
            raise HTTPException(404, f"job {job_id} has {len(job.images)} images, no {index}")
        picture = job.images[index]
        filename = f"diffuse-{job.id}-{picture.seed}.png"
        return Response(
            picture.png,
            media_type="image/png",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.get(
        "/api/jobs/{job_id}/preview",
        response_class=Response,
        responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    )
    async def preview(job_id: JOB_ID) -> Response:
        """The latest preview of the x0 estimate (made while an event stream is open)."""
        job = find(job_id)
        if job.preview is None:
            raise HTTPException(404, f"job {job_id} has no preview yet")
        return Response(job.preview, media_type="image/png")

    @app.get(
        "/api/jobs/{job_id}/events",
        response_class=StreamingResponse,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    )
    async def events(job_id: JOB_ID) -> StreamingResponse:
        """Server-Sent Events: `progress` at every step ({status, step, steps, preview}: the x0
        estimate as a PNG data URL), then one final `done`, `cancelled` or `failed` event
        carrying the job."""
        job = find(job_id)

        async def stream() -> AsyncIterator[str]:
            job.watchers += 1
            try:
                version, shown = -1, -1
                while True:
                    if job.version == version:
                        yield ": keep-alive\n\n"
                    version = job.version
                    data: dict[str, Any] = {
                        "status": job.status.value,
                        "step": job.step,
                        "steps": job.steps,
                    }
                    if job.preview is not None and job.preview_step != shown:
                        shown = job.preview_step
                        encoded = base64.b64encode(job.preview).decode()
                        data["preview"] = f"data:image/png;base64,{encoded}"
                    yield f"event: progress\ndata: {json.dumps(data)}\n\n"
                    if job.status.final:
                        final = view(job).model_dump_json(exclude_none=True)
                        yield f"event: {job.status.value}\ndata: {final}\n\n"
                        return
                    await job.changed(version, KEEP_ALIVE_SECONDS)
            finally:
                job.watchers -= 1

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    app.add_middleware(
        GuardMiddleware, token=settings.token, max_body_bytes=settings.max_body_bytes
    )
    return app


def job_params(job: Job) -> dict[str, Any]:
    """A job's parameters as JSON: what each of its PNGs stores, with all its seeds."""
    params = job.params.for_seed(job.params.seeds[0])
    del params["seed"]
    return {**params, "seeds": list(job.params.seeds)}
