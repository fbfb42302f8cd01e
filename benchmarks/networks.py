"""diffuse's networks against diffusers' equivalents, side by side in one process.

For each pair (unet-cifar vs UNet2DModel in the google/ddpm-cifar10-32 configuration, dit-s/2
vs DiTTransformer2DModel with the same depth, width, heads and patch size) it measures, on the
same batch and the same inputs:

- a training step: forward, MSE loss, backward, AdamW (the same fused AdamW for both), images/s;
- a sampling forward pass under torch.inference_mode, ms per batch;

with warm-up, then `--repeats` rounds in which ours and theirs alternate (ABBA order), so load
from other processes hits both; it reports medians and the ratio ours/theirs, plus parameters
and FLOPs (torch.utils.flop_counter, 2 per multiply-add, attention included). `--device cuda`
runs the same in bf16 autocast and adds MFU against the card's dense bf16 peak.

    python benchmarks/networks.py                       # CPU, fp32
    python benchmarks/networks.py --device cuda --train-batch 128 --sample-batch 256
    python benchmarks/networks.py --only unet --json out.json

diffusers comes from the `bench` extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from diffuse.nets import DiT, UNet, dit_preset, unet_preset
from diffuse.nets.layers import reference_kernels

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name substring.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
}


def _require_diffusers():
    try:
        import diffusers
    except ImportError:
        sys.exit(
            "benchmarks/networks.py compares against diffusers, which is not installed; "
            "install the bench extra: pip install -e '.[bench]'"
        )
    return diffusers


@dataclasses.dataclass
class Pair:
    """One comparison: our network and the reference, with a way to call each."""

    name: str
    ours: nn.Module
    theirs: nn.Module
    call_ours: Callable[[nn.Module, Tensor, Tensor, Tensor | None], Tensor]
    call_theirs: Callable[[nn.Module, Tensor, Tensor, Tensor | None], Tensor]
    shape: tuple[int, int, int]
    num_classes: int
    published: dict | None = None  # the paper's parameters and GFLOPs (2 per multiply-add)


def unet_pair(dropout: float) -> Pair:
    """unet-cifar and diffusers' UNet2DModel configured as google/ddpm-cifar10-32."""
    from diffusers import UNet2DModel

    theirs = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_eps=1e-6,
        norm_num_groups=32,
        dropout=dropout,
    )
    ours = UNet(unet_preset("unet-cifar", dropout=dropout))
    return Pair(
        "unet-cifar",
        ours,
        theirs,
        lambda m, x, t, y: m(x, t),
        lambda m, x, t, y: m(x, t.long()).sample,
        (3, 32, 32),
        0,
    )


def dit_pair() -> Pair:
    """dit-s/2 and diffusers' DiTTransformer2DModel with depth 12, width 384, 6 heads, p=2."""
    from diffusers import DiTTransformer2DModel

    cfg = dit_preset("dit-s/2")
    theirs = DiTTransformer2DModel(
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_layers=cfg.depth,
        sample_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_embeds_ada_norm=cfg.num_classes,
    )
    return Pair(
        "dit-s/2",
        DiT(cfg),
        theirs,
        lambda m, x, t, y: m(x, t, class_labels=y),
        lambda m, x, t, y: m(x, timestep=t.long(), class_labels=y).sample,
        (cfg.in_channels, cfg.image_size, cfg.image_size),
        cfg.num_classes,
        # Peebles & Xie 2023, table 1: 33.0M parameters (with the learned-sigma output, which
        # adds 6k), 6.06 GFLOPs counted as multiply-adds. diffusers' DiTTransformer2DModel
        # re-creates the timestep and label embedders in every block, hence its 39.8M.
        {"params": 33.0e6, "gflops": 2 * 6.06},
    )


def count_flops(fn: Callable[[], object], ours: bool) -> int:
    """FLOPs of fn() (2 per multiply-add); SDPA's math backend so attention is counted."""
    ctx = reference_kernels() if ours else contextlib.nullcontext()
    with torch.no_grad(), ctx, sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as c:
        fn()
    return int(c.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_pair(pair: Pair, args: argparse.Namespace, device: torch.device) -> dict:
    """Measure one pair; returns the JSON record."""
    gen = torch.Generator().manual_seed(0)
    c, h, w = pair.shape

    def inputs(batch: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        x = torch.randn(batch, c, h, w, generator=gen).to(device)
        t = torch.randint(0, 1000, (batch,), generator=gen).float().to(device)
        y = None
        if pair.num_classes:
            y = torch.randint(0, pair.num_classes, (batch,), generator=gen).to(device)
        target = torch.randn(batch, c, h, w, generator=gen).to(device)
        return x, t, y, target

    x1, t1, y1, _ = inputs(1)
    record: dict = {"name": pair.name}
    if pair.published:
        record["params_published"] = pair.published["params"]
        record["gflops_published"] = pair.published["gflops"]
    for who, net, call in (
        ("ours", pair.ours, pair.call_ours),
        ("theirs", pair.theirs, pair.call_theirs),
    ):
        net.to(device)
        record[f"params_{who}"] = sum(p.numel() for p in net.parameters())
        record[f"gflops_{who}"] = (
            count_flops(lambda n=net, f=call: f(n, x1, t1, y1), who == "ours") / 1e9
        )

    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    xt, tt, yt, target = inputs(args.train_batch)
    xs, ts, ys, _ = inputs(args.sample_batch)
    fused = True  # fused AdamW exists for CPU and CUDA; the same optimizer for both networks

    def make(net: nn.Module, call: Callable) -> tuple[Callable[[], None], Callable[[], None]]:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0, fused=fused)

        def train() -> None:
            net.train()
            with amp:
                out = call(net, xt, tt, yt)
            loss = (out.float() - target).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def sample() -> None:
            net.eval()
            with torch.inference_mode(), amp:
                call(net, xs, ts, ys)

        return train, sample

    fns = {}
    for who, net, call in (
        ("ours", pair.ours, pair.call_ours),
        ("theirs", pair.theirs, pair.call_theirs),
    ):
        fns[f"train_{who}"], fns[f"sample_{who}"] = make(net, call)
    for _ in range(args.warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.repeats):
        for kind in ("train", "sample"):
            order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")  # ABBA
            for who in order:
                key = f"{kind}_{who}"
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                fns[key]()
                _sync(device)
                times[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    # CPU seconds consumed by this process: on a shared machine a steadier measure than wall
    # time (other processes' load stretches wall time but not our own CPU time).
    record["train_cpu_ratio"] = med_cpu["train_theirs"] / med_cpu["train_ours"]
    record["sample_cpu_ratio"] = med_cpu["sample_theirs"] / med_cpu["sample_ours"]
    record["load_average"] = _loadavg()
    for who in ("ours", "theirs"):
        record[f"train_images_per_s_{who}"] = args.train_batch / med[f"train_{who}"]
        record[f"sample_ms_{who}"] = 1000 * med[f"sample_{who}"]
        record[f"train_s_all_{who}"] = times[f"train_{who}"]
        record[f"sample_s_all_{who}"] = times[f"sample_{who}"]
        if device.type == "cuda":
            peak = _bf16_peak(device)
            if peak:
                # A training step is ~3 forward passes (forward; backward for inputs, weights).
                fl = record[f"gflops_{who}"] * 1e9
                record[f"train_mfu_{who}"] = (
                    3 * fl * record[f"train_images_per_s_{who}"] / (peak * 1e12)
                )
                record[f"sample_mfu_{who}"] = (
                    fl * args.sample_batch / med[f"sample_{who}"] / (peak * 1e12)
                )
    record["train_ratio"] = record["train_images_per_s_ours"] / record["train_images_per_s_theirs"]
    record["sample_ratio"] = record["sample_ms_theirs"] / record["sample_ms_ours"]
    record["params_ratio"] = record["params_ours"] / record["params_theirs"]
    record["gflops_ratio"] = record["gflops_ours"] / record["gflops_theirs"]
    return record


def _cpu_name() -> str:
    """The CPU model and core count, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        return f"{names[0]}, {len(names)} cores"
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def _loadavg() -> float | None:
    """1-minute load average of the machine (other work running beside the benchmark)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def _bf16_peak(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def print_table(records: list[dict], meta: dict) -> None:
    """Human-readable summary of the JSON records."""
    print(
        f"device {meta['device']} ({meta['device_name']}), {meta['dtype']}, threads "
        f"{meta['threads']}, train batch {meta['train_batch']}, sample batch "
        f"{meta['sample_batch']}, {meta['repeats']} rounds (medians)"
    )
    head = (
        f"{'network':<12} {'':<8} {'params':>12} {'GFLOPs':>8} {'train img/s':>12} "
        f"{'sample ms':>10}"
    )
    mfu = meta["device"] == "cuda"
    if mfu:
        head += f" {'train MFU':>10} {'sample MFU':>10}"
    print(head)
    for r in records:
        for who in ("ours", "theirs"):
            line = (
                f"{r['name'] if who == 'ours' else '':<12} {who:<8} {r[f'params_{who}']:>12,d} "
                f"{r[f'gflops_{who}']:>8.2f} {r[f'train_images_per_s_{who}']:>12.2f} "
                f"{r[f'sample_ms_{who}']:>10.1f}"
            )
            if mfu and f"train_mfu_{who}" in r:
                line += (
                    f" {100 * r[f'train_mfu_{who}']:>9.1f}% {100 * r[f'sample_mfu_{who}']:>9.1f}%"
                )
            print(line)
        print(
            f"{'':<12} {'ratio':<8} {r['params_ratio']:>12.3f} {r['gflops_ratio']:>8.3f} "
            f"{r['train_ratio']:>11.2f}x {r['sample_ratio']:>9.2f}x"
        )
        if "params_published" in r:
            print(
                f"{'':<12} {'paper':<8} {r['params_published']:>12,.0f} "
                f"{r['gflops_published']:>8.2f}   (ours/paper: params "
                f"{r['params_ours'] / r['params_published']:.3f}, GFLOPs "
                f"{r['gflops_ours'] / r['gflops_published']:.3f})"
            )
        print(
            f"{'':<12} {'cpu-time':<8} {'':>12} {'':>8} {r['train_cpu_ratio']:>11.2f}x "
            f"{r['sample_cpu_ratio']:>9.2f}x   (load average {r['load_average']})"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--only", choices=["unet", "dit"], default=None, help="run one pair")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="measured rounds (medians)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--dropout", type=float, default=0.0, help="U-Net dropout, both (google: 0)")
    p.add_argument("--json", default=None, help="also write the records to this file")
    args = p.parse_args(argv)
    _require_diffusers()
    import diffusers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    torch.manual_seed(0)
    meta = {
        "command": "python benchmarks/networks.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "threads": torch.get_num_threads(),
        "train_batch": args.train_batch,
        "sample_batch": args.sample_batch,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    pairs = []
    if args.only in (None, "unet"):
        pairs.append(unet_pair(args.dropout))
    if args.only in (None, "dit"):
        pairs.append(dit_pair())
    records = []
    for pair in pairs:
        records.append(run_pair(pair, args, device))
        del pair
    out = {"meta": meta, "results": records}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(
        json.dumps(
            {
                "meta": meta,
                "results": [{k: v for k, v in r.items() if "_all_" not in k} for r in records],
            },
            indent=2,
        )
    )
    print_table(records, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
