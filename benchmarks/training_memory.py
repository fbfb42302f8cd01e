"""Peak resident memory and throughput of a training recipe, run through the real CLI.

Runs `python -m diffuse train RECIPE` for a few steps in a child process (with one checkpoint and
one sample grid, so their memory counts too), reads the child's peak RSS from the kernel
(wait4 ru_maxrss) and the images/s of metrics.jsonl (the first logging interval, which holds the
warm-up, is left out), then prints JSON and a table.

    python benchmarks/training_memory.py                       # configs/mnist-unet.toml
    python benchmarks/training_memory.py --steps 60 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 3072  # acceptance: the mnist recipe peaks at no more than 3 GB


def run(recipe: Path, steps: int, threads: int, extra: list[str]) -> dict:
    """Train `steps` steps of `recipe` in a child process; return the measurements."""
    sys.path.insert(0, str(REPO / "src"))
    from diffuse.config import load_recipe

    cfg = load_recipe(recipe, extra)
    log_every = max(1, steps // 8)
    with tempfile.TemporaryDirectory(prefix="diffuse-bench-") as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "diffuse", "train", str(recipe), "--out", str(out),
            "--no-progress", "--set", f"train.steps={steps}",
            "--set", f"log.every_steps={log_every}",
            "--set", f"checkpoint.every_steps={steps}", "--set", f"sample.every_steps={steps}",
        ]  # fmt: skip
        for item in extra:
            cmd += ["--set", item]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
            cmd += ["--set", f"train.threads={threads}"]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        stderr = child.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"training failed:\n{stderr[-3000:]}")
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records[1:]] or [records[0]["images_per_s"]]
    ips = statistics.median(rates)
    # The recipe stops at train.steps or after train.max_minutes of training, whichever is first.
    minutes = cfg.train.steps * cfg.optim.batch_size / ips / 60
    if cfg.train.max_minutes:
        minutes = min(minutes, cfg.train.max_minutes)
    expected_steps = min(cfg.train.steps, int(minutes * 60 * ips / cfg.optim.batch_size))
    return {
        "recipe": str(recipe.relative_to(REPO) if recipe.is_relative_to(REPO) else recipe),
        "overrides": extra,
        "steps_run": steps,
        "batch_size": cfg.optim.batch_size,
        "threads": threads or "default",
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "limit_mb": LIMIT_MB,
        "within_limit": usage.ru_maxrss / 1024 <= LIMIT_MB,
        "images_per_s": round(ips, 1),
        "child_cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "wall_s": round(wall, 1),
        "recipe_steps": cfg.train.steps,
        "recipe_max_minutes": cfg.train.max_minutes,
        "expected_recipe_minutes": round(minutes, 1),
        "expected_recipe_steps": expected_steps,
        "expected_recipe_images": expected_steps * cfg.optim.batch_size,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "final_loss": records[-1]["loss"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "configs" / "mnist-unet.toml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--set", action="append", default=[], help="recipe override")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = run(args.recipe.resolve(), args.steps, args.threads, args.set)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print()
    r = result
    print(
        f"| {'recipe':<24} | {'threads':>7} | {'peak RSS MB':>11} | {'img/s':>6} | "
        f"{'run min':>7} | {'run steps':>9} | {'load':>5} |"
    )
    print(f"|{'-' * 26}|{'-' * 9}|{'-' * 13}|{'-' * 8}|{'-' * 9}|{'-' * 11}|{'-' * 7}|")
    print(
        f"| {r['recipe']:<24} | {r['threads']!s:>7} | {r['peak_rss_mb']:>11} | "
        f"{r['images_per_s']:>6} | {r['expected_recipe_minutes']:>7} | "
        f"{r['expected_recipe_steps']:>9} | {r['load_average_1m']:>5} |"
    )
    return 0 if result["within_limit"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
