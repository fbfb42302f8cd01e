"""Fixtures for the whole suite."""

import os
from collections.abc import Iterator

import pytest
import torch

from fresh_imports import FreshImports


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n`), each worker takes its share of the cores for torch's threads.

    Workers run side by side, one per core by default: a worker using every core would make
    each OpenMP region wait for threads the other workers have descheduled.
    """
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
