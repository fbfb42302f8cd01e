"""Does the masked diffusion network need the diffusion time? Two small MDLMs trained side by
side, identical but for `text.time_conditioning`, compared by their validation bound.

    python benchmarks/text_time_conditioning.py --out runs/time-ablation --json docs/text-time.json

Both runs use configs/shakespeare-mdlm.toml shrunk by `--set` overrides (width 64, depth 2,
windows of 64 characters, 16 per step), the same seed, data order and steps; the bound is the
EMA network's on the same validation windows with the same times and masks (eval seed 0).
The time-conditioned network is larger by its adaLN projections and time MLP (reported).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffuse.config import load_recipe
from diffuse.text_model_folder import load_text_model
from diffuse.training.model import count_parameters
from diffuse.training.text_loop import train_text

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "shakespeare-mdlm.toml"
SMALL = [
    "text.width=64",
    "text.depth=2",
    "text.heads=2",
    "text.length=64",
    "optim.batch_size=16",
    "optim.lr=3e-3",
    "ema.halflife_images=500",
    "checkpoint.every_steps=100",
    "log.every_steps=50",
    "eval.every_steps=100",
    "eval.windows=256",
    "eval.times=4",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="parent folder of the two run folders")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--variant", choices=["both", "plain", "time"], default="both")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    variants = ["plain", "time"] if args.variant == "both" else [args.variant]
    results = {}
    for name in variants:
        flag = "true" if name == "time" else "false"
        sets = [*SMALL, f"train.steps={args.steps}", f"text.time_conditioning={flag}"]
        cfg = load_recipe(RECIPE, sets)
        run = Path(args.out) / name
        result = train_text(cfg, run, resume=(run / "run.json").is_file(), progress=False)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        curve = [
            {"step": r["step"], "val_bpc": r["val_bpc"], "val_bpc_se": r["val_bpc_se"]}
            for r in map(json.loads, lines)
            if "val_bpc" in r
        ]
        params = count_parameters(load_text_model(result.model_dir).net.requires_grad_(True))
        results[name] = {"parameters": params, "curve": curve}
        print(f"{name}: {params} parameters", file=sys.stderr)
    print(f"{'step':>6s}" + "".join(f"{n:>24s}" for n in results))
    for i, point in enumerate(next(iter(results.values()))["curve"]):
        cells = "".join(
            f"{r['curve'][i]['val_bpc']:>15.4f} +- {r['curve'][i]['val_bpc_se']:.3f}"
            for r in results.values()
        )
        print(f"{point['step']:6d}{cells}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
