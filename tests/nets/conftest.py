"""Shared helpers for the network tests: tiny presets, randomised weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def randomize(net: nn.Module, std: float = 0.2, seed: int = 0) -> nn.Module:
    """Add noise to every parameter, so zero-initialised branches contribute to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return net


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """Every module here runs on one thread (tests/conftest.py, `one_thread`)."""
