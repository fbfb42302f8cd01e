"""Per-step cost of the training draws: counter-based streams against per-sample generators.

    python benchmarks/training_draws.py --threads 1 --json docs/training-draws.json

Every training step draws each sample's time, noise, flip and label drop from the sample's own
seed. `diffuse.training.loop.draw_per_sample` computes them from counter-based SplitMix64
streams, a few tensor operations for the whole batch on the training device. The baseline is
the way of doing it before (kept here only for the comparison): a CPU `torch.Generator` per
sample, seeded and drawn from in a Python loop. Median of --repeats calls, per batch and shape,
on the CPU (and on CUDA too when there is one, timed with synchronisation). JSON out, plus a
table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import torch

from diffuse.processes import EDM
from diffuse.training.counter_rng import batch_keys, mix_seeds
from diffuse.training.loop import draw_per_sample

CASES = [  # (batch, per-sample shape, what it is)
    (64, (3, 32, 32), "CPU recipe, 32x32 pixels"),
    (512, (3, 32, 32), "GPU recipe, 32x32 pixels"),
    (512, (4, 16, 16), "GPU recipe, 16x16x4 latents"),
    (512, (3, 64, 64), "64x64 pixels"),
]


def generator_loop(process: EDM, seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """The baseline: one CPU generator per sample, drawn from in a Python loop."""
    g = torch.Generator()
    ts, noises, us = [], [], []
    for s in seeds:
        g.manual_seed(s)
        ts.append(process.sample_t(1, generator=g))
        noises.append(torch.randn(shape, generator=g))
        us.append(torch.rand(2, generator=g, dtype=torch.float64))
    return torch.stack(noises)


def counter_draws(process: EDM, seed: int, batch: int, shape: tuple[int, ...], device: str):
    """What the training loop does: the batch's keys, then all draws at once."""
    return draw_per_sample(process, batch_keys(seed, 0, batch), shape, 0.5, 0.1, device)


def median_seconds(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    process = EDM()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for batch, shape, what in CASES:
        base = mix_seeds(0, 1)
        seeds = [mix_seeds(0, 1, i) for i in range(batch)]
        row = {"batch": batch, "shape": list(shape), "case": what}
        loop = functools.partial(generator_loop, process, seeds, shape)
        row["generator_loop_ms"] = 1e3 * median_seconds(loop, args.repeats, lambda: None)
        for device in devices:
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
            counter = functools.partial(counter_draws, process, base, batch, shape, device)
            row[f"counter_{device}_ms"] = 1e3 * median_seconds(counter, args.repeats, sync)
        row["speedup_cpu"] = row["generator_loop_ms"] / row["counter_cpu_ms"]
        rows.append(row)
    result = {"threads": args.threads, "repeats": args.repeats, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(f"threads {args.threads}, median of {args.repeats}")
    print("| batch | shape | generator loop (ms) | counter streams, CPU (ms) | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(
            f"| {r['batch']} | {shape} | {r['generator_loop_ms']:.1f} | "
            f"{r['counter_cpu_ms']:.1f} | {r['speedup_cpu']:.2f}x |"
        )


if __name__ == "__main__":
    main()
