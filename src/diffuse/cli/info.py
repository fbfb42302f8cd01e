"""`diffuse info`: parameters, FLOPs and memory of a network preset."""

from __future__ import annotations

import argparse
import json

from diffuse import nets
from diffuse.cli.arguments import CliError
from diffuse.nets.flops import network_info


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse info`: parameters, FLOPs and memory of a network preset."""
    p = sub.add_parser(
        "info",
        help="parameters, GFLOPs and activation memory of a network preset",
        description="Parameters, GFLOPs per forward pass (one sample) and the training "
        "activation memory of a batch, computed on the meta device (nothing is allocated).",
    )
    p.add_argument("preset", metavar="PRESET", help="network preset, e.g. unet-cifar or dit-s/2")
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
    """`diffuse info`: print the preset's size and cost (a table, or JSON with --json)."""
    for name in ("size", "channels", "batch", "frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name} must be >= 1, got {value}")
    info = network_info(
        nets.get_config(args.preset),
        size=args.size,
        channels=args.channels,
        batch=args.batch,
        name=args.preset,
        frames=args.frames or 0,
    )
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
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
