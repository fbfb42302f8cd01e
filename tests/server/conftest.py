"""Server tests: a tiny text-to-image model, and real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the server needs the 'serve' extra")

from diffuse.cli import main  # noqa: E402
from diffuse.nets.controlnet import ControlNet, ControlNetConfig  # noqa: E402
from diffuse.pipelines.control import save_controlnet  # noqa: E402
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


@pytest.fixture(scope="session")
def controlnet_dir(pipe, tmp_path_factory) -> Path:
    """A ControlNet folder ("edges-cn") for the tiny model, its zero layers moved as if trained
    (a fresh ControlNet adds nothing)."""
    config = ControlNetConfig("edges", pipe.model.codec.downsample, pipe.model.denoiser.net.config)
    net = ControlNet.from_base(pipe.model.denoiser.net, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return save_controlnet(tmp_path_factory.mktemp("cn") / "edges-cn", net, pipe.model)


@pytest.fixture(scope="session")
def other_pipe(tmp_path_factory) -> TextToImagePipeline:
    """A second tiny model ("other", other weights), for a ControlNet that is not its own."""
    out = tmp_path_factory.mktemp("serve-other") / "other"
    assert main(train_args(out, *TINY, "optim.lr=0.02")) == 0
    return load_pipeline(out)


@pytest.fixture
def live(pipe) -> Iterator:
    """live(**settings) starts a server; every one started is stopped at the end; `pipes` and
    `controlnets` replace the one tiny model."""
    started: list[LiveServer] = []

    def start(pipes=None, controlnets=(), **settings) -> LiveServer:
        server = LiveServer(pipes or pipe, controlnets, **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.thread.is_alive():
            server.stop()
