"""Server tests: a tiny text-to-image model, and real servers on free loopback ports."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")

from diffuse.cli import main  # noqa: E402
from diffuse.pipelines.text_to_image import TextToImagePipeline, load_pipeline  # noqa: E402
from diffuse.server import ServerSettings, build_server, create_app  # noqa: E402
from text_recipe import train_args  # noqa: E402

TINY = [
    "train.steps=3",
    "checkpoint.every_steps=3",
    "sample.every_steps=0",
    "optim.warmup_steps=0",
    "optim.lr=0.03",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """Every module here runs on one thread (tests/conftest.py, `one_thread`)."""


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A run folder ("tiny") with a tiny text-to-image model."""
    out = tmp_path_factory.mktemp("serve") / "tiny"
    assert main(train_args(out, *TINY)) == 0
    return out


@pytest.fixture(scope="session")
def pipe(model_dir) -> TextToImagePipeline:
    return load_pipeline(model_dir)


class LiveServer:
    """The app under uvicorn on a thread, on a free loopback port; `request` talks HTTP."""

    def __init__(self, pipe: TextToImagePipeline, **settings) -> None:
        self.settings = ServerSettings(**settings)
        self.app = create_app({pipe.name: pipe}, self.settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = build_server(
            self.app, grace=self.settings.shutdown_grace, log_level="warning"
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 120,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body bytes) of one request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        sent = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def json(self, method: str, path: str, body: object = None, **kw) -> tuple[int, dict]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data)

    def wait(self, job_id: str, timeout: float = 300, **kw) -> dict:
        """Poll a job until it is final."""
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.json("GET", f"/api/jobs/{job_id}", **kw)
            assert status == 200, job
            if job["status"] in ("done", "cancelled", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(120)
        assert not self.thread.is_alive(), "the server did not stop"


@pytest.fixture
def live(pipe) -> Iterator:
    """live(**settings) starts a server; every one started is stopped at the end."""
    started: list[LiveServer] = []

    def start(**settings) -> LiveServer:
        server = LiveServer(pipe, **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.thread.is_alive():
            server.stop()
