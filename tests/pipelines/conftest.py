"""Pipeline tests run tiny networks and MiniLM: one thread is faster than several on a shared
2-core machine (OpenMP threads would wait on each other)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Module-scoped, so module fixtures (a training run, a loaded pipeline) use one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
