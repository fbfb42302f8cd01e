"""A real `diffuse serve` application under uvicorn on a thread, on a free loopback port, and
an HTTP client for it (the server tests and the fuzz test share it)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Sequence

from diffuse.pipelines.text_to_image import TextToImagePipeline
from diffuse.server import ServedControlNet, ServerSettings, build_server, create_app


class LiveServer:
    """The app under uvicorn on a thread, on a free loopback port; `request` talks HTTP."""

    def __init__(
        self,
        pipe: TextToImagePipeline | dict[str, TextToImagePipeline],
        controlnets: Sequence[ServedControlNet] = (),
        **settings,
    ) -> None:
        self.settings = ServerSettings(**settings)
        pipes = pipe if isinstance(pipe, dict) else {pipe.name: pipe}
        self.app = create_app(pipes, self.settings, controlnets)
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
