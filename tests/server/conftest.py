"""Server tests: a tiny text-to-image model, and real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")

from diffuse.cli import main  # noqa: E402
from diffuse.pipelines.text_to_image import TextToImagePipeline, load_pipeline  # noqa: E402
from live_server import LiveServer  # noqa: E402
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
