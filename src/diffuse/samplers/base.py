"""What every sampler shares: the denoise / noise / callback types, `StepInfo`, input checks.

A sampler is a plain function `sampler(denoise, x, levels, *, callback=None, noise=None, **opts)`
on the level axis x = x0 + level * eps (docs/architecture.md, "One noise axis"). `levels` is a
1-D float64 CPU tensor, strictly decreasing, ending in exactly 0; all scalar arithmetic uses
Python floats taken from it, so a loop never synchronises with the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
"""denoise(x [B, ...], level: 0-dim float64 CPU tensor) -> x0 estimate [B, ...]."""

NoiseFn = Callable[[Tensor], Tensor]
"""noise(x) -> a standard normal tensor shaped like x (same dtype and device)."""


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports after each step.

    Attributes:
        index: the step just taken, from levels[index] to levels[index + 1] (0-based).
        level: levels[index + 1] as a float, the noise level `x` now sits at (0 after the last).
        x: the sample after the step [B, ...].
        denoised: the x0 estimate the step was built on (the latest model output) [B, ...].
        steps: the number of steps in the whole run (len(levels) - 1), for progress bars.
    """

    index: int
    level: float
    x: Tensor
    denoised: Tensor
    steps: int


Callback = Callable[[StepInfo], object]
"""callback(info) -> a tensor shaped like info.x to replace it, or anything else to keep it.

Only a returned `torch.Tensor` replaces the sample: None, True (what `tqdm.update` returns), a
number or any other object is ignored, so a progress bar's method can be passed as it is.
Returning a tensor is how constraints act on the loop (e.g. inpainting pastes the known region,
noised to info.level, into x). The replacement becomes the state the next step starts from; it
must have x's shape (ValueError otherwise).
"""


def default_noise(x: Tensor) -> Tensor:
    """Standard normal noise like x from the global generator (`torch.randn_like`)."""
    return torch.randn_like(x)


def check_inputs(x: Tensor, levels: Tensor) -> list[float]:
    """Validate a sampler's input and return the levels as Python floats.

    Args:
        x: the starting sample [B, ...], already at noise level levels[0].
        levels: 1-D decreasing noise levels ending in exactly 0.
    Returns:
        levels as a list of floats (the schedule every loop indexes).
    Raises:
        ValueError: NaN or inf in x; levels not 1-D, shorter than 2, not strictly decreasing,
            not ending in 0, negative or NaN. The message shows the offending values.
    """
    levels = torch.as_tensor(levels).detach().to(device="cpu", dtype=torch.float64)
    if levels.ndim != 1 or levels.numel() < 2:
        raise ValueError(
            f"levels must be a 1-D tensor of at least 2 values, got shape {tuple(levels.shape)}"
        )
    values = levels.tolist()
    if any(v != v for v in values):  # NaN is the only float unequal to itself
        raise ValueError(f"levels contain NaN: {values}")
    if values[-1] != 0.0:
        raise ValueError(f"levels must end in exactly 0, got last level {values[-1]!r}")
    if values[-2] <= 0.0:
        raise ValueError(f"levels before the last must be > 0, got {values[:-1]}")
    rising = [i for i in range(len(values) - 1) if not values[i] > values[i + 1]]
    if rising:
        i = rising[0]
        raise ValueError(
            f"levels must be strictly decreasing, got levels[{i}]={values[i]!r} <= "
            f"levels[{i + 1}]={values[i + 1]!r}"
        )
    # One host sync at the start (never inside the loop) to reject a poisoned input early.
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        first = tuple(bad[0].tolist())
        raise ValueError(
            f"x contains {bad.shape[0]} non-finite value(s) (NaN or inf), first x{list(first)}"
            f" = {x[first].item()!r}"
        )
    return values


def emit(
    callback: Callback | None,
    index: int,
    levels: list[float],
    x: Tensor,
    denoised: Tensor,
) -> tuple[Tensor, bool]:
    """Report step `index` to the callback and apply its replacement, if any.

    Returns:
        (x to continue from, whether the callback replaced it).
    """
    if callback is None:
        return x, False
    info = StepInfo(index, levels[index + 1], x, denoised, len(levels) - 1)
    out = callback(info)
    if not isinstance(out, Tensor):  # None, True from tqdm.update, numbers: not a replacement
        return x, False
    if out.shape != x.shape:
        raise ValueError(
            f"callback returned shape {tuple(out.shape)}, expected the shape of x {tuple(x.shape)}"
        )
    return out, True


def check_fraction(name: str, value: float, low: float = 0.0, high: float | None = None) -> None:
    """Raise ValueError unless low <= value (<= high), showing the value."""
    if not (value >= low and (high is None or value <= high)):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")
