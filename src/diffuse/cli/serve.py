"""`diffuse serve`: the HTTP API and the web page (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import os

from diffuse.cli.arguments import CliError
from diffuse.pipelines.text_to_image import TextToImagePipeline, load_pipeline

TOKEN_VARIABLE = "DIFFUSE_SERVE_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse serve`."""
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP, with a web page",
        description="Serve text-to-image models: a JSON API (schema at /openapi.json) for "
        "text-to-image, img2img, edit by inversion, inpainting and ControlNet jobs, live "
        "previews over Server-Sent Events and a web page at /. Requests running at the same "
        "time share network calls. Listens on loopback unless --host says otherwise; a "
        "non-loopback address needs --token (or --insecure).",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="a model folder; repeat for several (default: the bundled model)",
    )
    p.add_argument(
        "--controlnet",
        action="append",
        default=[],
        metavar="DIR",
        help="a ControlNet folder, served with the model it was built for; repeat for several",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token every API route needs (default: ${TOKEN_VARIABLE}, if set)",
    )
    p.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without a token"
    )
    p.add_argument(
        "--no-batching", action="store_true", help="run requests one at a time (no shared steps)"
    )
    p.add_argument("--max-queue", type=int, default=64, help="jobs waiting or running per model")
    p.add_argument("--max-batch-images", type=int, default=64, help="images sampled at once")
    p.add_argument("--max-steps", type=int, default=100, help="largest steps per request")
    p.add_argument("--max-images", type=int, default=8, help="most images per request")
    p.add_argument("--max-prompt-chars", type=int, default=1000, help="longest prompt")
    p.add_argument("--max-body-bytes", type=int, default=65536, help="largest request body")
    p.add_argument(
        "--max-upload-bytes", type=int, default=32768, help="largest image file in a request"
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds running jobs get to finish at shutdown (default 30)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the models, check the bind, serve until Ctrl-C or SIGTERM."""
    try:  # an optional extra: imported where it is needed, with the install command on failure
        from diffuse import server
    except ImportError as err:
        raise CliError(
            f"diffuse serve needs the 'serve' extra ({err.name} is missing): "
            "pip install 'diffuse[serve]'"
        ) from None
    token = args.token if args.token is not None else os.environ.get(TOKEN_VARIABLE) or None
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be in 1..65535, got {args.port}")
    server.check_bind(args.host, token, args.insecure)
    settings = server.ServerSettings(
        token=token,
        batching=not args.no_batching,
        max_queue=args.max_queue,
        max_batch_images=args.max_batch_images,
        max_steps=args.max_steps,
        max_images=args.max_images,
        max_prompt_chars=args.max_prompt_chars,
        max_body_bytes=args.max_body_bytes,
        max_upload_bytes=args.max_upload_bytes,
        shutdown_grace=args.shutdown_grace,
    )
    pipes: dict[str, TextToImagePipeline] = {}
    for folder in args.model or [None]:
        pipe = load_pipeline(folder, device=args.device)
        if pipe.name in pipes:
            raise CliError(f"two models are named {pipe.name!r}; serve each name once")
        pipes[pipe.name] = pipe
    controlnets = server.load_controlnets(args.controlnet, pipes)
    app = server.create_app(pipes, settings, controlnets)
    served = ", ".join([*pipes, *(f"{c.name} ({c.kind}, for {c.model})" for c in controlnets)])
    print(f"diffuse serve: http://{args.host}:{args.port}/ ({served})", flush=True)
    server.serve(app, args.host, args.port, grace=settings.shutdown_grace)
    return 0
