"""Speed of `diffuse generate`: a new user's first image, and the steady state.

1. Cold: the command a new user runs, `diffuse generate "a red circle above a blue square"`,
   as a fresh process (Python start-up, imports, loading the model and the text encoder, one
   image, the PNG written), wall time, `--repeats` times.
2. Steady state: in one process with the pipeline loaded, 4 images, 25 dpmpp_2m steps with
   classifier-free guidance (one batched network call per step for both branches), timed
   `--repeats` times after one warm-up call; the median is reported.

    python benchmarks/generate.py --json generate.json                 # bundled model
    python benchmarks/generate.py --model runs/shapes-t2i --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "a red circle above a blue square"
COLD_LIMIT_S = 15.0
STEADY_LIMIT_S = 1.5


def cold_start(model: str | None, repeats: int) -> list[float]:
    """Wall seconds of `diffuse generate PROMPT -o FILE` in a new process, per repeat."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            cmd = [sys.executable, "-m", "diffuse", "generate", PROMPT, "--no-progress"]
            cmd += ["-o", str(Path(tmp) / f"cold-{r}.png")]
            if model:
                cmd += ["--model", model]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    return times


def steady_state(model: str | None, repeats: int) -> tuple[list[float], dict]:
    """Seconds per call of 4 images x 25 steps with guidance, pipeline already loaded."""
    from diffuse.pipelines.text_to_image import load_pipeline

    pipe = load_pipeline(model)
    params = pipe.params(PROMPT, seeds=[0, 1, 2, 3], steps=25, sampler="dpmpp_2m")
    if params.guidance == 1.0:
        raise SystemExit("the model's default guidance is 1: no CFG to measure")
    pipe.generate(params)  # warm-up (allocator, oneDNN primitive caches, encoder cache)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe.generate(params)
        times.append(time.perf_counter() - t0)
    return times, params.for_seed(0) | {"seeds": list(params.seeds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the cold-start processes
    cold = cold_start(args.model, args.repeats)
    steady, settings = steady_state(args.model, args.repeats)
    out = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "cold_start_s": [round(t, 3) for t in cold],
        "cold_start_median_s": round(statistics.median(cold), 3),
        "steady_4x25_cfg_s": [round(t, 4) for t in steady],
        "steady_4x25_cfg_median_s": round(statistics.median(steady), 4),
        "limits_s": {"cold_start": COLD_LIMIT_S, "steady_4x25_cfg": STEADY_LIMIT_S},
        "settings": settings,
    }
    print("| measurement | median | runs | limit | ratio to limit |")
    print("|---|---|---|---|---|")
    for name, times, limit in (
        ("cold start: first PNG, new process", cold, COLD_LIMIT_S),
        ("steady state: 4 images x 25 steps, CFG", steady, STEADY_LIMIT_S),
    ):
        med = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {name} | {med:.2f} s | {runs} | {limit} s | {med / limit:.2f} |")
    print(f"threads {out['threads']}, load average {out['load_average']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
