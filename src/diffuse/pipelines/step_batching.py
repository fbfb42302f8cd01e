"""Cross-request step batching: the pending network calls of many paused runs, in few calls.

Each run (a `samplers.stepwise.StepwiseRun` over `TextToImagePipeline.generate`) waits on one
network call: its rows, their noise level and their conditioning. Rows of different runs are
concatenated with per-row levels and run as one batch; since the network's result for a row
depends on that row alone (`pipelines.sample.invariant_network`), every run gets exactly the
output it would have got alone.

Rows can share a batch only when their conditioning tensors agree in shape beyond the batch.
Text contexts of different token lengths are the exception for networks whose only use of the
context is cross-attention (`ragged_context`): contexts are padded to the longest with a mask,
and the cross-attention runs each row over its own tokens (`nets.layers.attention_by_length`),
so padding never reaches a row's result. Otherwise (e.g. joint text-image attention, where
padding would change the sums) prompts of different lengths go to separate calls of a tick.

A run that has sampled pauses once more, on the decode of its samples (a `DecodeCall`, see
`samplers.stepwise.pause`): the runs that finish in one tick are decoded in one call of the
model's decode, which is row-invariant too (the codec decodes in `batch_invariant` slices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from diffuse.guidance import CondDenoiseFn, pad_contexts
from diffuse.nets.layers import JointAttention
from diffuse.samplers.stepwise import NetworkCall

__all__ = ["DecodeCall", "batch_key", "ragged_context_ok", "run_calls", "run_decodes"]


def ragged_context_ok(net: torch.nn.Module) -> bool:
    """Whether `net` may take text contexts of several token lengths in one call: it reads the
    context through cross-attention only (no joint text-image attention, whose sums padding
    would change)."""
    return not any(isinstance(m, JointAttention) for m in net.modules())


def batch_key(call: NetworkCall, ragged_context: bool = False) -> tuple:
    """What rows must agree on to share a network call: x's and every conditioning tensor's
    shape beyond the batch, and dtypes; with `ragged_context`, not the text's token count."""
    cond = dict(call.cond or {})
    if ragged_context and "context" in cond:
        cond.pop("context_mask", None)
        context = cond.pop("context")
        cond["context"] = context[:, :0]  # width and dtype only
    parts = tuple(sorted((k, tuple(v.shape[1:]), str(v.dtype)) for k, v in cond.items()))
    return (tuple(call.x.shape[1:]), str(call.x.dtype), parts)


def run_calls(
    network: CondDenoiseFn,
    calls: Sequence[NetworkCall],
    on_batch: Callable[[int], object] | None = None,
    ragged_context: bool = False,
) -> list[Tensor]:
    """Answer every call with as few network calls as `batch_key` allows.

    Args:
        network: network(x, level [B], cond) -> x0 estimate [B, ...], row-invariant (e.g.
            `invariant_network(denoiser)`).
        calls: the pending calls, each from its own run.
        on_batch: called with the row count of each network call made (for statistics).
        ragged_context: the network sees its text context only through cross-attention, so
            prompts of different token lengths may share a call (see the module docstring).
    Returns:
        one output per call, in order, shaped like its x.
    """
    groups: dict[tuple, list[int]] = {}
    for index, call in enumerate(calls):
        groups.setdefault(batch_key(call, ragged_context), []).append(index)
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
            conds = pad_contexts([c.cond for c in part])
            cond = {
                key: torch.cat([c[key].expand(n, *c[key].shape[1:]) for c, n in zip(conds, sizes)])
                for key in conds[0]
            }
        out = network(x, levels, cond)
        if on_batch is not None:
            on_batch(x.shape[0])
        for i, piece in zip(members, out.split(sizes)):
            outputs[i] = piece
    return outputs  # type: ignore[return-value]


@dataclass(frozen=True)
class DecodeCall:
    """The decode a paused run waits on: its samples [B, ...] (latents of a latent model)."""

    samples: Tensor


def run_decodes(decode: Callable[[Tensor], Tensor], calls: Sequence[DecodeCall]) -> list[Tensor]:
    """Answer every decode call with as few calls of `decode` as the sample shapes allow.

    Args:
        decode: decode(samples [B, ...]) -> images [B, ...], row-invariant (e.g.
            `TrainedModel.decode`).
        calls: the pending decodes, each from its own run.
    Returns:
        one batch of images per call, in order.
    """
    groups: dict[tuple, list[int]] = {}
    for index, call in enumerate(calls):
        key = (tuple(call.samples.shape[1:]), call.samples.dtype, call.samples.device)
        groups.setdefault(key, []).append(index)
    outputs: list[Tensor | None] = [None] * len(calls)
    for members in groups.values():
        samples = [calls[i].samples for i in members]
        images = decode(torch.cat(samples))
        for i, piece in zip(members, images.split([s.shape[0] for s in samples])):
            outputs[i] = piece
    return outputs  # type: ignore[return-value]
