"""`diffuse info`: parameters, FLOPs and memory of a network preset or of a model folder's
network; for a model folder also what it stores (all weights, or a delta on a base model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffuse import nets
from diffuse.cli.arguments import CliError
from diffuse.io import load_safetensors
from diffuse.model_folder import (
    BASE_CODEC,
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_info,
    resolve_model_folder,
)
from diffuse.nets.flops import network_info
from diffuse.nets.io import config_from_dict


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse info`: parameters, FLOPs and memory of a network preset."""
    p = sub.add_parser(
        "info",
        help="parameters, GFLOPs and activation memory of a network preset",
        description="Parameters, GFLOPs per forward pass (one sample) and the training "
        "activation memory of a batch, computed on the meta device (nothing is allocated).",
    )
    p.add_argument(
        "preset",
        metavar="PRESET",
        nargs="?",
        help="network preset, e.g. unet-cifar or dit-s/2 (or --model)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="a model folder instead of a preset: its network, and what the folder stores "
        "(all weights, or only what differs from a base model)",
    )
    p.add_argument("--size", type=int, default=None, help="input side (default: the preset's)")
    p.add_argument("--channels", type=int, default=None, help="input channels (preset's)")
    p.add_argument("--batch", type=int, default=64, help="batch for the memory estimate")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="the video form of the preset (U-Net with temporal layers, DiT with space-time "
        "patches) on clips of this many frames; numbers per clip",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`diffuse info`: print the network's size and cost (a table, or JSON with --json)."""
    for name in ("size", "channels", "batch", "frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name} must be >= 1, got {value}")
    if (args.preset is None) == (args.model is None):
        raise CliError("name a network preset or a model folder (--model DIR), not both")
    stored = None
    if args.model is not None:
        folder = resolve_model_folder(args.model)
        config = config_from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        stored = _stored(folder)
    else:
        config = nets.get_config(args.preset)
    info = network_info(
        config,
        size=args.size,
        channels=args.channels,
        batch=args.batch,
        name=args.preset or args.model,
        frames=args.frames or 0,
    )
    if args.json:
        print(json.dumps(info.to_dict() | ({"stored": stored} if stored else {}), indent=2))
        return 0
    if stored is not None:
        print(_describe(stored, info.params))
    gib = 2.0**30
    clip = f"{info.frames} frames x " if info.frames else ""
    print(f"{info.name}: input {clip}{info.channels}x{info.size}x{info.size}")
    print(f"  parameters           {info.params:>14,d}")
    unit = "clip" if info.frames else "sample"
    print(
        f"  GFLOPs / forward     {info.gflops:>14.3f}  (one {unit}; x{info.batch}: "
        f"{info.gflops * info.batch:.1f})"
    )
    act = info.activation_bytes / gib
    print(f"  activations (train)  {act:>14.3f} GiB  (batch {info.batch}, fp32)")
    print(f"  weights+grads+AdamW  {info.train_state_bytes / gib:>14.3f} GiB")
    return 0


def _stored(folder: Path) -> dict[str, Any]:
    """What a model folder stores: its weights file's tensors and parameters, and for a delta
    folder its base model and where its codec comes from."""
    model = read_info(folder)
    tensors = load_safetensors(folder / WEIGHTS_FILE)
    record: dict[str, Any] = {
        "folder": str(folder),
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
        "weights_bytes": (folder / WEIGHTS_FILE).stat().st_size,
        "codec": model.codec,
    }
    if model.delta is not None:
        record["delta"] = model.delta.to_dict() | {"describe": model.delta.describe()}
    return record


def _describe(stored: dict[str, Any], params: int) -> str:
    """The lines saying what the folder stores."""
    mb = stored["weights_bytes"] / 1e6
    held = f"{stored['tensors']} tensors, {stored['parameters']:,d} values, {mb:.2f} MB"
    if "delta" not in stored:
        return f"{stored['folder']}: all weights stored ({held})"
    codec = "the base's" if stored["codec"] == BASE_CODEC else (stored["codec"] or "none")
    return (
        f"{stored['folder']}: a delta on base {stored['delta']['describe']}: stores only what "
        f"differs from it ({held}; the network has {params:,d} parameters); codec: {codec}"
    )
