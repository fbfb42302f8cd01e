"""Speed of `diffuse generate` and of the Python API, measured on the paths a user takes.

1. Cold: the command a new user runs, `diffuse generate "a red circle above a blue square"`,
   as a fresh process (Python start-up, imports, loading the model and the text encoder, one
   image, the PNG written), wall time, `--repeats` times. Also once with an empty bytecode
   cache (`PYTHONPYCACHEPREFIX` pointing at a new folder), as on the first run after install.
2. Python API, in one process with default torch threads unless --threads: `load_pipeline()`,
   then `pipe(PROMPT, num_images_per_prompt=4)` (model defaults: 25 dpmpp_2m steps with
   classifier-free guidance): the first call on its own, then `--repeats` more calls; the
   median of those is the steady state.

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


def first_run_cold(model: str | None) -> float:
    """Wall seconds of the cold command with an empty bytecode cache (first run after install)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}
        cmd = [sys.executable, "-m", "diffuse", "generate", PROMPT, "--no-progress"]
        cmd += ["-o", str(Path(tmp) / "first.png")] + (["--model", model] if model else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return time.perf_counter() - t0


def python_api(model: str | None, repeats: int) -> tuple[float, float, list[float], dict]:
    """(load s, first call s, later calls s, settings) of `pipe(PROMPT, num_images_per_prompt=4)`
    with the model's default settings."""
    from diffuse.pipelines.text_to_image import load_pipeline

    t0 = time.perf_counter()
    pipe = load_pipeline(model)
    load = time.perf_counter() - t0
    params = pipe.params(PROMPT, n=4)
    if params.guidance == 1.0:
        raise SystemExit("the model's default guidance is 1: no CFG to measure")
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        pipe(PROMPT, num_images_per_prompt=4)
        times.append(time.perf_counter() - t0)
    return load, times[0], times[1:], params.for_seed(0) | {"seeds": list(params.seeds)}


def _cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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
    load_before = os.getloadavg()
    first_run = first_run_cold(args.model)
    cold = cold_start(args.model, args.repeats)
    load, first_call, steady, settings = python_api(args.model, args.repeats)
    out = {
        "machine": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "first_run_after_install_s": round(first_run, 3),
        "cold_start_s": [round(t, 3) for t in cold],
        "cold_start_median_s": round(statistics.median(cold), 3),
        "python_load_pipeline_s": round(load, 3),
        "python_first_call_4_images_s": round(first_call, 3),
        "steady_4x25_cfg_s": [round(t, 4) for t in steady],
        "steady_4x25_cfg_median_s": round(statistics.median(steady), 4),
        "limits_s": {"cold_start": COLD_LIMIT_S, "steady_4x25_cfg": STEADY_LIMIT_S},
        "settings": settings,
    }
    print("| measurement | median | runs | limit | ratio to limit |")
    print("|---|---|---|---|---|")
    for name, times, limit in (
        ("first run after install (empty bytecode cache)", [first_run], COLD_LIMIT_S),
        ("cold start: first PNG, new process", cold, COLD_LIMIT_S),
        ("Python: first pipe(prompt, num_images_per_prompt=4)", [first_call], STEADY_LIMIT_S),
        ("Python: later calls (steady state), 4 images x 25 steps, CFG", steady, STEADY_LIMIT_S),
    ):
        med = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {name} | {med:.2f} s | {runs} | {limit} s | {med / limit:.2f} |")
    print(f"{out['machine']}, {out['cpu_count']} cores, torch threads {out['threads']}, ")
    print(f"load average before {load_before}, after {out['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
