"""Renaming and reshaping weights between diffuse's and diffusers' state dicts.

A component's mapping is a list of `Rename` entries, each saying which diffusers tensors make
one diffuse tensor and how; `to_diffuse` and `to_diffusers` walk the same list in the two
directions, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from diffuse.io import ModelFileError

__all__ = ["Rename", "module_renames", "to_diffuse", "to_diffusers"]

Op = Literal["copy", "cat", "squeeze"]


@dataclass(frozen=True)
class Rename:
    """One diffuse tensor and the diffusers tensors it is made of.

    Attributes:
        ours: the diffuse state-dict key.
        theirs: the diffusers keys (one, or several for "cat").
        op: "copy" (same tensor), "cat" (diffusers' separate q, k, v concatenated along the
            output axis into one fused projection) or "squeeze" (a 1x1 convolution's
            (out, in, 1, 1) weight as a linear map's (out, in)).
    """

    ours: str
    theirs: tuple[str, ...]
    op: Op = "copy"


def module_renames(
    ours: str, theirs: str | tuple[str, ...], *, bias: bool = True, op: Op = "copy"
) -> list[Rename]:
    """The weight (and bias) of one module: `ours.weight` <- `theirs.weight`, ...

    Args:
        ours: the diffuse module path.
        theirs: the diffusers module path (several for "cat").
        bias: the module has a bias.
        op: how the weight is made ("squeeze" only reshapes the weight, never the bias).
    """
    names = (theirs,) if isinstance(theirs, str) else tuple(theirs)
    out = [Rename(f"{ours}.weight", tuple(f"{n}.weight" for n in names), op)]
    if bias:
        bias_op: Op = "cat" if op == "cat" else "copy"
        out.append(Rename(f"{ours}.bias", tuple(f"{n}.bias" for n in names), bias_op))
    return out


def to_diffuse(renames: list[Rename], state: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """A diffusers state dict as diffuse's.

    Args:
        renames: the component's mapping.
        state: the diffusers tensors.
        where: the weights file, for messages.
    Returns:
        The diffuse state dict.
    Raises:
        ModelFileError: a tensor the config implies is missing, or tensors the config does not
            explain are present (naming a few of them).
    """
    missing = sorted({k for r in renames for k in r.theirs if k not in state})
    used = {k for r in renames for k in r.theirs}
    unexpected = sorted(k for k in state if k not in used)
    if missing or unexpected:
        raise ModelFileError(
            f"{where} does not match its config.json: missing {missing[:4]} "
            f"({len(missing)} in all), unexpected {unexpected[:4]} ({len(unexpected)} in all)"
        )
    out: dict[str, Tensor] = {}
    for r in renames:
        tensors = [state[k] for k in r.theirs]
        if r.op == "cat":
            out[r.ours] = torch.cat(tensors, dim=0)
        elif r.op == "squeeze":
            out[r.ours] = tensors[0].reshape(tensors[0].shape[0], -1)
        else:
            out[r.ours] = tensors[0]
    return out


def to_diffusers(renames: list[Rename], state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A diffuse state dict as diffusers' (the inverse of `to_diffuse`).

    Args:
        renames: the component's mapping.
        state: the diffuse tensors.
    Returns:
        The diffusers state dict (contiguous tensors, ready for safetensors).
    """
    out: dict[str, Tensor] = {}
    for r in renames:
        value = state[r.ours].detach().cpu()
        if r.op == "cat":
            for key, part in zip(r.theirs, value.chunk(len(r.theirs), dim=0)):
                out[key] = part.contiguous()
        elif r.op == "squeeze":
            out[r.theirs[0]] = value.reshape(*value.shape, 1, 1).contiguous()
        else:
            out[r.theirs[0]] = value.contiguous()
    return out
