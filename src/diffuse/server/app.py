"""The HTTP API and the page: FastAPI routes over the model workers.

    app = create_app({"shapes-t2i": load_pipeline()}, ServerSettings(token="..."))
    uvicorn.run(app, host="127.0.0.1", port=7860)        # what `diffuse serve` does

Routes (all JSON unless said; every one but the page needs the token when one is set):

    GET    /                               the page (HTML/JS shipped in the package)
    GET    /api/models                     models, their defaults, the caps
    POST   /api/jobs/text-to-image         queue a job: 202 and the job (?wait=true: 200 when
                                           finished, with ?base64=true the PNGs inline)
    POST   /api/jobs/img2img               the same for img2img (image, strength)
    POST   /api/jobs/inversion             edit by inversion (image, source_prompt, inversion)
    POST   /api/jobs/inpaint               inpainting (image, binary mask, resample, feather)
    POST   /api/jobs/controlnet            text-to-image steered by a served ControlNet (a
                                           control map computed from control_image)
    GET    /api/jobs/{id}                  the job: status, step, images (?base64=true)
    DELETE /api/jobs/{id}                  cancel it
    GET    /api/jobs/{id}/images/{index}   a finished image: PNG with its parameters embedded
    GET    /api/jobs/{id}/preview          the latest x0 preview (PNG), while someone watches
    GET    /api/jobs/{id}/events           Server-Sent Events: progress with previews, the end
    GET    /openapi.json                   the schema

Images travel in the JSON body as base64 (or data: URLs), at the model's size (never resized,
as the CLI's), checked before they are decoded (`server.uploads`). Every route of a task builds
a `Job` whose body runs the same pipeline method the CLI command runs (`pipe.generate`,
`pipe.run_edit`) through the worker's `network` and `decoder`, so edit and ControlNet jobs
share network calls and decodes with every other job (a ControlNet job's calls go to its
steered copy of the network, shared by the jobs with the same ControlNet settings); the worker
knows no task, and everything after the POST (the job, its images, events, cancellation) is
shared. `GET /api/models` lists each model's `tasks` and ControlNets.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time,
# and the request model is a local of create_app.

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from diffuse import __version__
from diffuse.codecs.controls import control_map
from diffuse.guidance import CondDenoiseFn
from diffuse.pipelines.control import control_cond, control_record, controlled_denoiser
from diffuse.pipelines.image_to_image import image_hash, read_image
from diffuse.pipelines.sample import invariant_network
from diffuse.pipelines.text_to_image import TextToImagePipeline
from diffuse.pngmeta import png_bytes
from diffuse.samplers.registry import SAMPLERS, SCHEDULES
from diffuse.server.controlnets import ServedControlNet
from diffuse.server.jobs import Job, JobStatus, JobStore
from diffuse.server.schema import (
    ErrorView,
    ImageView,
    JobView,
    ModelView,
    controlnet_request,
    img2img_request,
    inpaint_request,
    inversion_request,
    text_to_image_request,
)
from diffuse.server.security import GuardMiddleware
from diffuse.server.settings import ServerSettings
from diffuse.server.uploads import UploadTooLarge, decode_image
from diffuse.server.worker import ModelWorker, QueueFull, ShuttingDown

TEXT_TO_IMAGE = "text-to-image"
EDIT_TASKS = ("img2img", "inversion", "inpaint")  # `pipelines.image_editing.TASKS`, by route
CONTROLNET = "controlnet"
GENERATION_KEYS = ("negative_prompt", "seeds", "n", "sampler", "schedule", "steps", "guidance")
UPLOAD_FIELDS = ("image", "mask", "control_image")
CONTROLLED_NETWORKS = 32  # ControlNet settings whose steered networks are kept for sharing
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
JOB_ID = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="a job id")]
KEEP_ALIVE_SECONDS = 15.0
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorView} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}


def _static(name: str) -> bytes:
    return (resources.files("diffuse.server") / "static" / name).read_bytes()


def _example_pngs(size: int) -> tuple[str, str]:
    """Base64 of a grey picture and of a binary mask (a white square) of `size`: the schema's
    examples for image fields, which a client (or a fuzzer) may send as they are."""
    picture = Image.new("L", (size, size), 128)
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size // 2, size // 2))
    return tuple(base64.b64encode(png_bytes(im, {})).decode() for im in (picture, mask))


def generation_keywords(body: Any) -> dict[str, Any]:
    """The keywords of `TextToImagePipeline.params` a request carries (besides the prompt)."""
    keywords = {key: getattr(body, key) for key in GENERATION_KEYS if hasattr(body, key)}
    return keywords | {"size": body.size}


def create_app(
    pipes: dict[str, TextToImagePipeline],
    settings: ServerSettings,
    controlnets: Sequence[ServedControlNet] = (),
) -> FastAPI:
    """The ASGI application serving `pipes` (name -> model; the first is the default) and the
    ControlNets loaded for them (`server.controlnets.load_controlnets`).

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
    by_name = {served.name: served for served in controlnets}
    unknown = [c.model for c in controlnets if c.model not in pipes]
    if unknown:
        raise ValueError(f"ControlNets given for models not served: {unknown}")
    steered: OrderedDict[tuple, CondDenoiseFn] = OrderedDict()
    picture, mask = _example_pngs(pipes[names[0]].size)
    Request_ = text_to_image_request(settings, names)
    Img2Img_ = img2img_request(settings, names, picture)
    Inversion_ = inversion_request(settings, names, picture)
    Inpaint_ = inpaint_request(settings, names, picture, mask)
    ControlNet_ = controlnet_request(settings, names, list(by_name), picture)

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
        if first.get("type") == "string_too_long" and where in UPLOAD_FIELDS:
            limit = settings.max_upload_bytes
            return JSONResponse({"error": f"{where}: the upload is over {limit} bytes"}, 413)
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
            model=job.model,
            status=job.status.value,
            queue_position=workers[job.model].position(job),
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
                    tasks=[TEXT_TO_IMAGE, *EDIT_TASKS]
                    + ([CONTROLNET] if any(c.model == name for c in controlnets) else []),
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
                        "max_upload_bytes": settings.max_upload_bytes,
                        "max_queue": settings.max_queue,
                    },
                    stats=dataclasses.asdict(stats),
                    controlnets=[
                        {"name": c.name, "kind": c.kind} for c in controlnets if c.model == name
                    ],
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
        name, pipe = pick(body.model)
        params = checked(lambda: pipe.params(body.prompt, **generation_keywords(body)))
        job = Job(
            TEXT_TO_IMAGE,
            params,
            lambda network, callback, decoder: pipe.generate(
                params, callback=callback, network=network, decoder=decoder
            ),
        )
        return await enqueue(name, job, wait, inline)

    def pick(model: str | None) -> tuple[str, TextToImagePipeline]:
        name = model or names[0]
        return name, pipes[name]

    def checked(make: Callable[[], Any]) -> Any:
        """make(), with a ValueError (a bad value, named) answered 422."""
        try:
            return make()
        except UploadTooLarge as error:
            raise HTTPException(413, str(error)) from None
        except ValueError as error:
            raise HTTPException(422, str(error)) from None

    def upload(text: str, field: str, pipe: TextToImagePipeline) -> Image.Image:
        return checked(
            lambda: decode_image(field, text, size=pipe.size, max_bytes=settings.max_upload_bytes)
        )

    async def enqueue(name: str, job: Job, wait: bool, inline: bool) -> JSONResponse:
        """Queue the job on its model's worker; 202 (or, with wait, 200 when finished)."""
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

    def edit_job(task: str, body: Any, extra: dict[str, Any]) -> tuple[str, Job]:
        """A job of `pipelines.image_editing` (img2img, inversion, inpaint) for a request."""
        name, pipe = pick(body.model)
        image = upload(body.image, "image", pipe)
        mask = upload(body.mask, "mask", pipe) if task == "inpaint" else None
        params = checked(
            lambda: pipe.edit_params(
                task,
                body.prompt,
                image,
                mask=mask,
                **extra,
                **generation_keywords(body),
            )
        )

        def run(network: CondDenoiseFn, callback: Any, decoder: Any) -> Any:
            return pipe.run_edit(
                params, image, mask=mask, callback=callback, network=network, decoder=decoder
            )

        return name, Job(task, params, run)

    job_route = {
        "status_code": 202,
        "response_model": JobView,
        "response_model_exclude_none": True,
        "responses": {**ERRORS, 200: {"model": JobView, "description": "finished (wait=true)"}},
    }
    Wait = Annotated[bool, Query(description="answer when the job has finished")]
    Inline = Annotated[bool, Query(alias="base64", description="include the PNGs as base64")]

    @app.post("/api/jobs/img2img", **job_route)
    async def img2img(
        body: Img2Img_,  # type: ignore[valid-type]
        wait: Wait = False,
        inline: Inline = False,
    ) -> Any:
        """Queue an img2img (SDEdit) job, as `diffuse edit IMAGE PROMPT --strength S`."""
        name, job = edit_job("img2img", body, {"strength": body.strength})
        return await enqueue(name, job, wait, inline)

    @app.post("/api/jobs/inversion", **job_route)
    async def inversion(
        body: Inversion_,  # type: ignore[valid-type]
        wait: Wait = False,
        inline: Inline = False,
    ) -> Any:
        """Queue an edit by inversion, as `diffuse edit IMAGE PROMPT --invert --source TEXT`."""
        extra = {
            "source_prompt": body.source_prompt,
            "inversion": body.inversion,
            "refine": body.refine,
            "source_guidance": body.source_guidance,
        }
        name, job = edit_job("inversion", body, extra)
        return await enqueue(name, job, wait, inline)

    @app.post("/api/jobs/inpaint", **job_route)
    async def inpaint(
        body: Inpaint_,  # type: ignore[valid-type]
        wait: Wait = False,
        inline: Inline = False,
    ) -> Any:
        """Queue an inpainting job, as `diffuse inpaint IMAGE --mask MASK PROMPT`."""
        name, job = edit_job("inpaint", body, {"resample": body.resample, "feather": body.feather})
        return await enqueue(name, job, wait, inline)

    def choose_controlnet(name: str, wanted: str | None, kind: str | None) -> ServedControlNet:
        """The ControlNet a request names (or the model's first of `kind`), checked."""
        if wanted is not None:
            served = by_name.get(wanted)
            if served is None:
                have = ", ".join(by_name) or "none (start the server with --controlnet DIR)"
                raise HTTPException(422, f"controlnet: no ControlNet {wanted!r}; served: {have}")
            if served.model != name:
                raise HTTPException(
                    422,
                    f"controlnet: {wanted!r} was built for model {served.model!r}, not for "
                    f"{name!r}",
                )
            if kind is not None and kind != served.kind:
                raise HTTPException(
                    422, f"control_kind: ControlNet {wanted!r} reads {served.kind!r}, not {kind!r}"
                )
            return served
        fits = [c for c in controlnets if c.model == name and kind in (None, c.kind)]
        if not fits:
            what = f"of kind {kind!r} " if kind else ""
            raise HTTPException(
                422, f"controlnet: model {name!r} has no ControlNet {what}on this server"
            )
        return fits[0]

    def steered_network(
        served: ServedControlNet, scale: float, start: float, end: float
    ) -> CondDenoiseFn:
        """The model's network steered by `served` with these settings (kept, so that jobs
        with the same settings share network calls)."""
        key = (served.name, scale, start, end)
        if key not in steered:
            model = pipes[served.model].model
            denoiser = checked(lambda: controlled_denoiser(model, served.net, scale, start, end))
            steered[key] = invariant_network(denoiser)
            while len(steered) > CONTROLLED_NETWORKS:
                steered.popitem(last=False)  # running jobs keep their own reference
        steered.move_to_end(key)
        return steered[key]

    @app.post("/api/jobs/controlnet", **job_route)
    async def controlnet(
        body: ControlNet_,  # type: ignore[valid-type]
        wait: Wait = False,
        inline: Inline = False,
    ) -> Any:
        """Queue a ControlNet job, as `diffuse generate PROMPT --controlnet DIR --control IMAGE`:
        the map of the ControlNet's kind is computed from `control_image`."""
        name, pipe = pick(body.model)
        served = choose_controlnet(name, body.controlnet, body.control_kind)
        picture = upload(body.control_image, "control_image", pipe)
        params = checked(lambda: pipe.params(body.prompt, **generation_keywords(body)))
        scale, start, end = body.control_scale, body.control_start, body.control_end
        if not end < start:
            raise HTTPException(
                422, f"control_end: must be below control_start, got {end} >= {start}"
            )
        network = steered_network(served, scale, start, end)
        _, pixels = checked(lambda: read_image(picture, pipe.size, 3))
        extra_cond = control_cond(control_map(served.kind, pixels), pipe.device)
        record = control_record(
            served.folder, "", served.kind, image_hash(pixels), scale, start, end
        )

        def run(network: CondDenoiseFn, callback: Any, decoder: Any) -> Any:
            return pipe.generate(
                params, callback=callback, network=network, extra_cond=extra_cond, decoder=decoder
            )

        job = Job(CONTROLNET, params, run, extra=record, network=network)
        return await enqueue(name, job, wait, inline)

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
            workers[job.model].cancel(job)
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
    params = job.record(job.seeds[0])
    del params["seed"]
    return {**params, "seeds": list(job.seeds)}
