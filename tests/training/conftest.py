"""Training tests run tiny networks: one thread per process is far faster than several,
especially on a shared 2-core machine where OpenMP threads would wait on each other."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by subprocesses and spawned ranks
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
