"""CLI tests: tiny models made once, and `python -m diffuse` run on a pseudo-terminal.

The text-to-image model is `t2i_run` (tests/conftest.py)."""

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from diffuse.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"

# A class-conditional 8x8 grey model on procedural shapes: trains in well under a second.
CLASS_RECIPE = """\
[model]
preset = "unet-tiny"
overrides = { base_channels = 8, num_groups = 4, head_channels = 8 }
[data]
source = "procedural"
resolution = 8
size = 16
channels = 1
num_classes = 3
[optim]
batch_size = 8
[train]
steps = 2
threads = 1
[checkpoint]
every_steps = 2
[sample]
every_steps = 0
steps = 2
"""


@pytest.fixture(scope="package")
def _one_thread_here() -> Iterator[None]:
    """Tiny networks in this process run on one thread (see tests/conftest.py, one_thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def class_recipe(tmp_path_factory) -> Path:
    """The tiny class-conditional recipe as a TOML file."""
    path = tmp_path_factory.mktemp("recipe") / "tiny-classes.toml"
    path.write_text(CLASS_RECIPE)
    return path


@pytest.fixture(scope="package")
def class_run(tmp_path_factory, class_recipe, _one_thread_here) -> Path:
    """A run folder holding the tiny class-conditional model."""
    out = tmp_path_factory.mktemp("classes") / "run"
    assert main(["train", str(class_recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def run_in_terminal(
    args: list[str], cwd: Path, timeout: float = 120.0, columns: int = 100
) -> tuple[int, str]:
    """Run `python -m diffuse ARGS` with stdin, stdout and stderr on a pseudo-terminal, as a
    person at a terminal would, and return (exit status, everything the terminal showed).
    `columns=0` leaves the terminal unsized, as `script` started by a program leaves it."""
    master, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if columns else 0, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TERM": "xterm",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffuse", *args],
        stdin=child,
        stdout=child,
        stderr=child,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(child)
    shown = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"diffuse {' '.join(args)} ran over {timeout} s")
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not data:
                break
            shown.append(data)
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(shown).decode("utf-8", errors="replace")


@pytest.fixture
def terminal() -> Callable[..., tuple[int, str]]:
    """`terminal(args, cwd)`: see `run_in_terminal`."""
    return run_in_terminal
