"""Time of the README's test command at two commits, run alternately on this machine.

    python benchmarks/suite_time.py --base main --head HEAD --repeats 1 --json docs/suite-time.json

Each commit is checked out into a temporary git worktree and `python -m pytest -q` (the
README's test command, options from that commit's pyproject.toml) runs there with that
worktree's src/ first on PYTHONPATH. The runs alternate (base, head, base, head, ...) so that
both see the same load on a shared machine; each run records its wall time, the CPU seconds of
the whole process tree (user + system, workers and subprocesses included), the load average
before it, the exit status and pytest's summary line. JSON out, plus a table on stdout with the
head / base ratios of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffuse.data_files import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "pytest", "-q"]


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(checkout: Path, data: Path, extra: list[str]) -> dict:
    """One run of the test command (plus `extra` arguments) in `checkout`."""
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout / "src"),
        "DIFFUSE_DATA": str(data),
    }
    load = os.getloadavg()[0]
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run([*COMMAND, *extra], cwd=checkout, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    lines = [x for x in done.stdout.splitlines() if re.search(r"\d+ (passed|failed)", x)]
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "load_before": round(load, 2),
        "exit_status": done.returncode,
        "summary": lines[-1].strip("= ") if lines else done.stdout[-500:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="commit of the reference run")
    parser.add_argument("--head", default="HEAD", help="commit compared with it")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternated")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. a test file"
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    data = shared_data_dir()  # resolved here: the temporary checkouts have no ../shared beside
    commits = {
        name: git("rev-parse", ref) for name, ref in (("base", args.base), ("head", args.head))
    }
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="suite-time-") as tmp:
        checkouts = {}
        for name, commit in commits.items():
            checkouts[name] = Path(tmp) / name
            git("worktree", "add", "--detach", str(checkouts[name]), commit)
        try:
            for _ in range(args.repeats):
                for name in ("base", "head"):
                    result = run_suite(checkouts[name], data, args.pytest_args)
                    runs[name].append(result)
                    print(f"{name} {commits[name][:10]}: {result}", file=sys.stderr, flush=True)
        finally:
            for checkout in checkouts.values():
                git("worktree", "remove", "--force", str(checkout))
    median = {
        name: {key: statistics.median(r[key] for r in runs[name]) for key in ("wall_s", "cpu_s")}
        for name in runs
    }
    report = {
        "command": " ".join(["python -m pytest -q", *args.pytest_args]),
        "machine": f"{os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "commits": commits,
        "runs": runs,
        "median": median,
        "ratio_head_over_base": {
            key: round(median["head"][key] / median["base"][key], 3) for key in ("wall_s", "cpu_s")
        },
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("| run | commit | wall s | CPU s | load before | exit | summary |")
    print("|---|---|---|---|---|---|---|")
    for name in ("base", "head"):
        for r in runs[name]:
            row = [name, commits[name][:10], r["wall_s"], r["cpu_s"], r["load_before"]]
            print("| " + " | ".join(map(str, [*row, r["exit_status"], r["summary"]])) + " |")
    ratio = report["ratio_head_over_base"]
    print(f"\nhead / base (medians): wall {ratio['wall_s']}, CPU {ratio['cpu_s']}")


if __name__ == "__main__":
    main()
