"""`diffuse serve`: an HTTP API and a web page over text-to-image models (generation, img2img,
edit by inversion, inpainting, ControlNet).

FastAPI (on Starlette) serves the routes and derives the OpenAPI schema from typed request
models; uvicorn runs it. One worker thread per model owns the network and batches the steps of
every running request into shared network calls (`server.worker`). This package needs the
`serve` extra: `pip install 'diffuse[serve]'`.
"""

from diffuse.server.app import create_app
from diffuse.server.controlnets import ServedControlNet, load_controlnets
from diffuse.server.runner import build_server, serve
from diffuse.server.security import check_bind
from diffuse.server.settings import ServerSettings

__all__ = [
    "ServedControlNet",
    "ServerSettings",
    "build_server",
    "check_bind",
    "create_app",
    "load_controlnets",
    "serve",
]
