"""Cross-request step batching: the pending network calls of many paused runs, in few calls.

Each run (a `samplers.stepwise.StepwiseRun` over `TextToImagePipeline.generate`) waits on one
network call: its rows, their noise level and their conditioning. Rows of different runs are
concatenated with per-row levels and run as one batch; since the network's result for a row
depends on that row alone (`pipelines.sample.invariant_network`), every run gets exactly the
output it would have got alone.

Rows can share a batch only when their conditioning tensors agree in shape beyond the batch: a
text context padded to a longer prompt changes the attention's summation order in the last
bits, so prompts of different token lengths go to separate calls of the same tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from diffuse.guidance import CondDenoiseFn
from diffuse.samplers.stepwise import NetworkCall

__all__ = ["batch_key", "run_calls"]


def batch_key(call: NetworkCall) -> tuple:
    """What rows must agree on to share a network call: x's and every conditioning tensor's
    shape beyond the batch, and dtypes."""
    cond = call.cond or {}
    parts = tuple(sorted((k, tuple(v.shape[1:]), str(v.dtype)) for k, v in cond.items()))
    return (tuple(call.x.shape[1:]), str(call.x.dtype), parts)


def run_calls(
    network: CondDenoiseFn,
    calls: Sequence[NetworkCall],
    on_batch: Callable[[int], object] | None = None,
) -> list[Tensor]:
    """Answer every call with as few network calls as `batch_key` allows.

    Args:
        network: network(x, level [B], cond) -> x0 estimate [B, ...], row-invariant (e.g.
            `invariant_network(denoiser)`).
        calls: the pending calls, each from its own run.
        on_batch: called with the row count of each network call made (for statistics).
    Returns:
        one output per call, in order, shaped like its x.
    """
    groups: dict[tuple, list[int]] = {}
    for index, call in enumerate(calls):
        groups.setdefault(batch_key(call), []).append(index)
    outputs: list[Tensor | None] = [None] * len(calls)
    for members in groups.values():
        part = [calls[i] for i in members]
        sizes = [c.x.shape[0] for c in part]
        x = torch.cat([c.x for c in part])
        levels = torch.cat(
            [torch.as_tensor(c.level, dtype=torch.float64).expand(n) for c, n in zip(part, sizes)]
        )
        cond = None
        if part[0].cond is not None:
            cond = {
                key: torch.cat(
                    [c.cond[key].expand(n, *c.cond[key].shape[1:]) for c, n in zip(part, sizes)]
                )
                for key in part[0].cond
            }
        out = network(x, levels, cond)
        if on_batch is not None:
            on_batch(x.shape[0])
        for i, piece in zip(members, out.split(sizes)):
            outputs[i] = piece
    return outputs  # type: ignore[return-value]
