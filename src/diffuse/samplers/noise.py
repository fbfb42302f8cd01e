"""Per-sample seeded noise: a seed list gives the same samples in any batching, on any device.

Each sample owns a CPU `torch.Generator` seeded with its seed and draws only its own slice, so
the stream a sample sees depends on its seed alone - not on the batch size, its position in the
batch, or the device the sampler runs on (docs/architecture.md, "Seeds are per sample").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class SeededNoise:
    """Standard normal noise drawn per sample from CPU generators.

    Use `initial(shape)` for the starting noise and pass the object itself as a sampler's `noise`
    (it is called as noise(x) and returns a tensor like x).

    Args:
        seeds: one integer seed per sample in the batch.
        device: where the returned tensors live (drawing always happens on the CPU).
        dtype: dtype of `initial`'s output. Values are drawn in float64 when dtype is float64
            and in float32 otherwise, then cast, so float16/bfloat16 runs share float32 streams.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        seeds = list(seeds)
        if not seeds:
            raise ValueError("seeds must be a non-empty sequence of integers, got []")
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
        if bad:
            raise ValueError(f"seeds must be integers, got {bad!r}")
        if any(s < 0 or s >= 2**64 for s in seeds):
            raise ValueError(f"seeds must be in [0, 2**64), got {seeds!r}")
        self.seeds = seeds
        self.device = torch.device(device)
        self.dtype = dtype
        self._draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self._generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def _draw(self, shape: tuple[int, ...]) -> Tensor:
        """[len(seeds), *shape] on the CPU, each row from its own generator."""
        rows = [torch.randn(shape, generator=g, dtype=self._draw_dtype) for g in self._generators]
        return torch.stack(rows)

    def initial(self, shape: Sequence[int]) -> Tensor:
        """Starting noise [len(seeds), *shape] (multiply by `process.initial_std(levels[0])`).

        Args:
            shape: per-sample shape, e.g. (C, H, W).
        Returns:
            standard normal noise on `device` in `dtype`.
        """
        return self._draw(tuple(shape)).to(device=self.device, dtype=self.dtype)

    def __call__(self, x: Tensor) -> Tensor:
        """Per-step noise shaped like x [B, ...], with B == len(seeds), on x's device and dtype."""
        if x.shape[0] != len(self.seeds):
            raise ValueError(
                f"batch size {x.shape[0]} does not match the number of seeds {len(self.seeds)}"
            )
        return self._draw(tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)
