"""Training tests run tiny networks, on one thread per process (tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by subprocesses and spawned ranks
