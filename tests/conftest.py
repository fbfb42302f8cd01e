"""Fixtures for the whole suite."""

from collections.abc import Iterator

import pytest
import torch


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
