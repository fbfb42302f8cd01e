"""Fitted solvers on a text-to-image Shapes model: prompt adherence at few network calls.

1. Copies the model folder (default: the bundled model) to --work and runs
   `diffuse fit-solver --steps 4 5 6 8 10` on the copy (bounded by --fit-minutes), unless
   --work already holds fitted solvers and --skip-fit is given.
2. Scores the one-to-three prompt set of `shapes_adherence.py` (held-out scenes, prompt stream
   7, seed = prompt index, the model's guidance) with the fitted solver and with dpmpp_2m,
   UniPC and DPM++ 3M (model schedule) at each number of calls, and dpmpp_2m at 25 steps.
   A step count whose fit was not saved (no better than a plain sampler) is reported as such.

    python benchmarks/fitted_solver.py --work /tmp/fitted --json docs/fitted-solver.json

Results are written to --json after every configuration, so a stopped run keeps what it had.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from diffuse.cli import main as diffuse_main
from diffuse.fitted_solvers import FITTED, read_solvers
from diffuse.pipelines.text_to_image import default_model_dir, load_pipeline
from diffuse.shapes.evaluator import detect_objects, score_detections
from shapes_adherence import EVAL_SEED, prompt_sets

PLAIN = ("dpmpp_2m", "unipc", "dpmpp_3m")


def score(pipe, prompts: list[str], sampler: str | None, steps: int, batch: int) -> dict:
    """One-to-three adherence of one sampler setting (seed = prompt index)."""
    t0 = time.perf_counter()
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        seeds = list(range(start, start + len(chunk)))
        params = pipe.params("", seeds=seeds, sampler=sampler, steps=steps)
        images.append(pipe.generate(params, prompts=chunk))
    report = score_detections(detect_objects(torch.cat(images)), prompts)
    return {"score": report.summary()["score"], "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("--work", required=True, help="folder for the model copy with its solvers")
    ap.add_argument("--skip-fit", action="store_true", help="use the solvers already in --work")
    ap.add_argument("--calls", default="4,5,6,8,10", help="network calls to compare")
    ap.add_argument("--fit-minutes", type=float, default=15.0, help="fit-solver --max-minutes")
    ap.add_argument(
        "--fit-args",
        default="",
        help="more fit-solver options, e.g. '--conditions 4 --noises 4 --reference-steps 32'",
    )
    ap.add_argument("-n", type=int, default=300, help="prompts (default 300)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    calls = [int(c) for c in args.calls.split(",")]
    work = Path(args.work) / "model"
    source = Path(args.model) if args.model else default_model_dir()
    fit_seconds = None
    if not args.skip_fit:
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(source, work)
        t0 = time.perf_counter()
        steps = [str(c) for c in calls]
        fit = ["fit-solver", "--model", str(work), "--steps", *steps]
        fit += ["--max-minutes", str(args.fit_minutes), *args.fit_args.split()]
        assert diffuse_main(fit) == 0
        fit_seconds = round(time.perf_counter() - t0, 1)
    solvers = read_solvers(work)
    pipe = load_pipeline(work)
    prompts = prompt_sets(args.n, EVAL_SEED)["one-to-three"]
    out: dict = {
        "model_hash": pipe.model_hash,
        "prompts": args.n,
        "prompt_seed": EVAL_SEED,
        "guidance": pipe.defaults.guidance,
        "fit_seconds": fit_seconds,
        "fit_args": args.fit_args,
        "solvers": {n: s.to_dict() | {"digest": s.digest} for n, s in solvers.items()},
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "results": {},
    }

    def record(key: str, value: dict) -> None:
        out["results"][key] = value
        print(key, value, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")

    record("dpmpp_2m@25", score(pipe, prompts, "dpmpp_2m", 25, args.batch))
    for n in calls:
        if n in solvers:
            record(f"fitted@{n}", score(pipe, prompts, FITTED, n, args.batch))
        else:
            record(f"fitted@{n}", {"score": None, "note": "not saved by fit-solver"})
        for name in PLAIN:
            record(f"{name}@{n}", score(pipe, prompts, name, n, args.batch))
    res = out["results"]
    print(f"| calls | fitted | {' | '.join(PLAIN)} |")
    print("|---|---|" + "---|" * len(PLAIN))
    for n in calls:
        cells = [res[f"{k}@{n}"]["score"] for k in ("fitted", *PLAIN)]
        text = ["-" if c is None else f"{100 * c:.1f}%" for c in cells]
        print(f"| {n} | {' | '.join(text)} |")
    print(f"dpmpp_2m at 25 steps: {100 * res['dpmpp_2m@25']['score']:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
