"""Fixtures for the whole suite."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diffuse.cli import main
from fresh_imports import FreshImports
from text_recipe import train_args


def pytest_configure(config: pytest.Config) -> None:
    """Threads for tests that run side by side under pytest-xdist (`-n`).

    Each worker takes its share of the cores for torch's threads: a worker using every core
    would make each OpenMP region wait for threads the other workers have descheduled. Tests
    that ask for more threads (to check thread-count independence) still oversubscribe the
    cores, so OpenMP threads wait passively (sleep instead of spinning on a core another thread
    needs). The policy is read when torch loads OpenMP: it is set here, in the process that
    starts the workers, and the workers inherit it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // int(workers)))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module and its module-scoped fixtures.

    The tests run tiny networks (and MiniLM) on a shared 2-core machine: a second thread gains
    nothing, and an OpenMP region can wait a whole scheduler slice for a descheduled worker (a
    2-thread MiniLM call took ~1 s under load, 1 thread ~30 ms).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fresh_imports() -> Iterator[FreshImports]:
    """`fresh_imports(code)`: the modules loaded after `code` ran in a fresh process (one helper
    process serves every check; see tests/fresh_imports.py)."""
    fresh = FreshImports()
    yield fresh
    fresh.close()


@pytest.fixture(scope="session")
def t2i_run(tmp_path_factory) -> Path:
    """A run folder (named "run") holding a tiny text-to-image model, trained once per test
    process: the real recipe (configs/shapes-t2i.toml) shrunk, 3 steps at a high learning rate
    without warm-up, so that the prompt visibly changes the output. Tests only read it."""
    out = tmp_path_factory.mktemp("t2i") / "run"
    sets = ["train.steps=3", "checkpoint.every_steps=3", "sample.every_steps=0"]
    sets += ["optim.warmup_steps=0", "optim.lr=0.03"]  # the zero-initialised output layer moves
    before = torch.get_num_threads()
    try:
        assert main(train_args(out, *sets)) == 0
    finally:
        torch.set_num_threads(before)
    return out
