"""Running the application under uvicorn, with a graceful shutdown."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


def build_server(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    grace: float = 30.0,
    log_level: str = "info",
) -> uvicorn.Server:
    """A uvicorn server for `app`; `.run()` serves until Ctrl-C or SIGTERM (or until
    `.should_exit` is set from another thread; `.run(sockets=[s])` serves a bound socket).

    On the signal uvicorn stops accepting connections and lets open ones (a waiting request, an
    event stream) end for up to `grace` seconds; then the app's lifespan stops the workers, which
    give accepted jobs what remains of their own grace period and cancel the rest. Nothing is
    written to disk, so nothing is left half-written.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=grace,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(app: FastAPI, host: str, port: int, *, grace: float = 30.0) -> None:
    """Serve `app` on host:port until Ctrl-C or SIGTERM (see `build_server`)."""
    build_server(app, host, port, grace=grace).run()
