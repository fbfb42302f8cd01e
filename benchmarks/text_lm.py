"""Masked diffusion vs autoregressive text model: bits per character, sample quality, speed
and infilling, side by side in one run.

    python benchmarks/text_lm.py --mdlm models/shakespeare-mdlm --ar models/shakespeare-ar \
        --runs runs/shakespeare-mdlm runs/shakespeare-ar --json docs/text-lm.json

Parts (`--parts`, default all):

- bits: validation bits/char of both models on every non-overlapping validation window (the
  last 10% of tiny-shakespeare, windows of the trained length): the AR model's exact NLL and
  the MDLM bound with its Monte Carlo standard error; with `--runs`, the validation curve
  each run logged during training (EMA weights, the first `eval.windows` windows).
- samples: generative perplexity of `-n` full-length unconditional samples under the AR model
  (exp of its mean NLL per character) and the mean per-sample character entropy in bits (a
  collapsed sampler repeats few characters), for each diffusion sampler and step count, next
  to AR samples at temperature 1 and real validation windows.
- speed: characters per second of `-n` full-length samples, diffusion at `--speed-steps`
  steps vs AR with its key/value cache, interleaved, median of `--repeats`.
- infill: `--infill-windows` validation windows (seeded random starts), the middle 16-64
  characters masked; the MDLM fills them in `--infill-steps` steps; the AR model scores the
  whole window (bits/char) for the fill, for a random validation substring of the same length
  in its place, and for the original; plus the exact-match rate of the filled characters.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from diffuse.pipelines.text import validation_windows
from diffuse.text.bound import ar_bits_per_char, mdlm_bound
from diffuse.text.objectives import ar_nll
from diffuse.text.sampling import autoregressive, unmask
from diffuse.text_model_folder import TextModel, load_text_model

LN2 = math.log(2.0)
PARTS = ("bits", "samples", "speed", "infill")
SAMPLERS = "ancestral,confidence,confidence:32"  # sampler[:block length], comma-separated


def sampler_settings(text: str) -> list[tuple[str, int]]:
    """'ancestral,confidence:32' -> [("ancestral", 0), ("confidence", 32)]."""
    out = []
    for item in text.split(","):
        name, _, block = item.strip().partition(":")
        out.append((name, int(block or 0)))
    return out


def char_entropy(rows: torch.Tensor, vocab_size: int) -> float:
    """Mean over rows of the entropy (bits) of the row's character histogram."""
    out = []
    for row in rows:
        p = torch.bincount(row, minlength=vocab_size).double() / row.numel()
        p = p[p > 0]
        out.append(float(-(p * p.log2()).sum()))
    return statistics.mean(out)


def nll_bits(ar: TextModel, rows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """The AR model's NLL of each row, in bits per character [N]."""
    with torch.no_grad():
        parts = [ar_nll(ar.net, rows[i : i + batch]) for i in range(0, len(rows), batch)]
    return torch.cat(parts).double() / (rows.shape[1] * LN2)


def part_bits(mdlm: TextModel, ar: TextModel, args: argparse.Namespace) -> dict:
    windows = validation_windows(ar)
    t0 = time.perf_counter()
    ar_score = ar_bits_per_char(ar.net, windows)
    bound = mdlm_bound(mdlm.net, validation_windows(mdlm), mdlm.schedule, args.times, seed=0)
    result = {
        "ar": ar_score.to_dict(),
        "mdlm": bound.to_dict(),
        "gap_percent": 100.0 * (bound.bits_per_char / ar_score.bits_per_char - 1.0),
        "seconds": time.perf_counter() - t0,
    }
    curves = {}
    for run in args.runs:
        lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(x) for x in lines]
        curves[Path(run).name] = [
            {"step": r["step"], "val_bpc": r["val_bpc"], "val_bpc_se": r.get("val_bpc_se", 0.0)}
            for r in records
            if "val_bpc" in r
        ]
    result["curves"] = curves
    return result


def part_samples(mdlm: TextModel, ar: TextModel, args: argparse.Namespace) -> dict:
    length, seeds = mdlm.net.config.max_length, list(range(args.n))
    v = ar.info.network.vocab_size
    rows = []
    if not args.no_reference:
        real = validation_windows(ar)[: args.n]
        rows.append({"source": "validation text", "steps": 0, **_quality(ar, real, v)})
        t0 = time.perf_counter()
        empty = torch.zeros(args.n, 0, dtype=torch.long)
        ar_out = autoregressive(ar.net, empty, length, seeds)
        quality = _quality(ar, ar_out, v)
        example = ar.vocab.decode(ar_out[0])
        rows.append(
            {
                "source": "ar t=1",
                "steps": length,
                **quality,
                "seconds": _since(t0),
                "example": example,
            }
        )
        print(f"  ar t=1: gen ppl {quality['gen_ppl']:.3f}", file=sys.stderr)
    masks = torch.full((args.n, length), mdlm.vocab.mask_id, dtype=torch.long)
    for steps in args.steps:
        for sampler, block in sampler_settings(args.samplers):
            if block and (
                steps < length // block
                or (args.block_steps is not None and steps not in args.block_steps)
            ):
                continue
            t0, calls = time.perf_counter(), []
            out = unmask(
                mdlm.net, masks, steps, seeds, schedule=mdlm.schedule, sampler=sampler,
                block_length=block, callback=lambda i, calls=calls: calls.append(i.evaluated),
            )  # fmt: skip
            name = f"mdlm {sampler}" + (f" blocks of {block}" if block else "")
            rows.append(
                {
                    "source": name,
                    "steps": steps,
                    **_quality(ar, out, v),
                    "network_calls": sum(calls),
                    "seconds": _since(t0),
                    "example": mdlm.vocab.decode(out[0]),
                }
            )
            print(
                f"  {name:32s} {steps:4d} steps: gen ppl {rows[-1]['gen_ppl']:.3f}", file=sys.stderr
            )
    return {"n": args.n, "length": length, "rows": rows}


def _quality(ar: TextModel, rows: torch.Tensor, vocab_size: int) -> dict:
    bits = nll_bits(ar, rows)
    return {
        "gen_ppl": float(torch.exp(bits.mean() * LN2)),
        "ar_bits_per_char": float(bits.mean()),
        "entropy_bits": char_entropy(rows, vocab_size),
    }


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def part_speed(mdlm: TextModel, ar: TextModel, args: argparse.Namespace) -> dict:
    length, seeds = mdlm.net.config.max_length, list(range(args.n))
    masks = torch.full((args.n, length), mdlm.vocab.mask_id, dtype=torch.long)
    empty = torch.zeros(args.n, 0, dtype=torch.long)
    times: dict[str, list[float]] = {"mdlm": [], "ar": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        unmask(
            mdlm.net, masks, args.speed_steps, seeds, schedule=mdlm.schedule, sampler="confidence"
        )
        times["mdlm"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        autoregressive(ar.net, empty, length, seeds)
        times["ar"].append(time.perf_counter() - t0)
    chars = args.n * length
    rate = {k: chars / statistics.median(v) for k, v in times.items()}
    return {
        "samples": args.n,
        "length": length,
        "mdlm_steps": args.speed_steps,
        "threads": torch.get_num_threads(),
        "chars_per_s": rate,
        "mdlm_over_ar": rate["mdlm"] / rate["ar"],
        "seconds": times,
    }


def part_infill(mdlm: TextModel, ar: TextModel, args: argparse.Namespace) -> dict:
    length = mdlm.net.config.max_length
    val = validation_windows(mdlm).reshape(-1)  # the validation split's characters
    g = torch.Generator().manual_seed(1234)
    n = args.infill_windows
    starts = torch.randint(0, val.numel() - length + 1, (n,), generator=g)
    windows = val[starts[:, None] + torch.arange(length)]  # [n, L]
    gaps = torch.randint(16, 65, (n,), generator=g)
    lo = (length - gaps) // 2
    positions = torch.arange(length)
    hole = (positions >= lo[:, None]) & (positions < (lo + gaps)[:, None])  # [n, L]
    random_fill = windows.clone()
    for i in range(n):  # a random validation substring of the gap's length in its place
        s = int(torch.randint(0, val.numel() - int(gaps[i]) + 1, (1,), generator=g))
        random_fill[i, hole[i]] = val[s : s + int(gaps[i])]
    filled = torch.empty_like(windows)
    t0 = time.perf_counter()
    for b in range(0, n, args.batch):
        x = torch.where(hole[b : b + args.batch], mdlm.vocab.mask_id, windows[b : b + args.batch])
        seeds = list(range(b, b + len(x)))
        filled[b : b + len(x)] = unmask(
            mdlm.net, x, args.infill_steps, seeds, schedule=mdlm.schedule, sampler="confidence"
        )
    fill_s = time.perf_counter() - t0
    scores = {
        name: nll_bits(ar, rows)
        for name, rows in (
            ("mdlm_fill", filled),
            ("random_substring", random_fill),
            ("original", windows),
        )
    }
    better = (scores["mdlm_fill"] < scores["random_substring"]).double().mean()
    return {
        "windows": n,
        "length": length,
        "gap_min_max": [int(gaps.min()), int(gaps.max())],
        "steps": args.infill_steps,
        "ar_bits_per_char": {k: float(v.mean()) for k, v in scores.items()},
        "fill_beats_random_fraction": float(better),
        "exact_match": float((filled[hole] == windows[hole]).double().mean()),
        "random_exact_match": float((random_fill[hole] == windows[hole]).double().mean()),
        "fill_seconds": fill_s,
        "example": {
            "original": mdlm.vocab.decode(windows[0]),
            "filled": mdlm.vocab.decode(filled[0]),
            "gap": [int(lo[0]), int(lo[0] + gaps[0])],
        },
    }


def print_tables(results: dict) -> None:
    if "bits" in results:
        r = results["bits"]
        print("\nvalidation bits/char (all windows)")
        print(f"  AR   {r['ar']['bits_per_char']:.4f} (exact, {r['ar']['windows']} windows)")
        m = r["mdlm"]
        se = m["standard_error"]
        print(f"  MDLM {m['bits_per_char']:.4f} +- {se:.4f} (bound, {m['times']} times)")
        print(f"  gap  {r['gap_percent']:+.1f}%")
        names = list(r["curves"])
        if names:
            steps = sorted({c["step"] for name in names for c in r["curves"][name]})
            print("  step " + "".join(f"{n:>28s}" for n in names))
            for s in steps:
                cells = []
                for name in names:
                    hit = [c for c in r["curves"][name] if c["step"] == s]
                    cells.append(
                        f"{hit[0]['val_bpc']:>19.4f} +- {hit[0]['val_bpc_se']:.3f}"
                        if hit
                        else " " * 28
                    )
                print(f"  {s:4d} " + "".join(cells))
    if "samples" in results:
        print(f"\nsamples ({results['samples']['n']} x {results['samples']['length']} chars)")
        head = ("source", "steps", "gen ppl", "entropy", "calls", "s")
        print("  {:34s} {:>5s} {:>8s} {:>8s} {:>6s} {:>7s}".format(*head))
        for row in results["samples"]["rows"]:
            print(
                f"  {row['source']:34s} {row['steps']:5d} {row['gen_ppl']:8.3f} "
                f"{row['entropy_bits']:8.3f} {row.get('network_calls', ''):>6} "
                f"{row.get('seconds', ''):>7}"
            )
    if "speed" in results:
        s = results["speed"]
        print(f"\nspeed ({s['samples']} x {s['length']} chars, {s['threads']} threads)")
        for k, v in s["chars_per_s"].items():
            print(f"  {k:5s} {v:10.1f} chars/s")
        print(f"  MDLM ({s['mdlm_steps']} steps) / AR (KV cache): {s['mdlm_over_ar']:.2f}x")
    if "infill" in results:
        r = results["infill"]
        print(f"\ninfilling ({r['windows']} windows, gaps {r['gap_min_max']}, {r['steps']} steps)")
        for k, v in r["ar_bits_per_char"].items():
            print(f"  {k:18s} {v:.4f} bits/char under AR")
        print(f"  fill beats random substring in {100 * r['fill_beats_random_fraction']:.1f}%")
        exact, chance = 100 * r["exact_match"], 100 * r["random_exact_match"]
        print(f"  exact match {exact:.1f}% (random substring {chance:.1f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdlm", required=True, help="masked diffusion model folder")
    parser.add_argument("--ar", required=True, help="autoregressive model folder")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders: validation curves")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    parser.add_argument("--times", type=int, default=4, help="bound: times per window")
    parser.add_argument("-n", type=int, default=8, help="samples per setting")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--samplers", default=SAMPLERS, help="sampler[:block], comma list")
    parser.add_argument(
        "--block-steps",
        type=int,
        nargs="*",
        default=None,
        help="block samplers only at these steps (default: all)",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="samples: skip AR and real text rows"
    )
    parser.add_argument("--speed-steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--infill-windows", type=int, default=500)
    parser.add_argument("--infill-steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50, help="infill windows per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mdlm, ar = load_text_model(args.mdlm), load_text_model(args.ar)
    if not mdlm.is_diffusion or ar.is_diffusion:
        parser.error("--mdlm must be a diffusion model and --ar an autoregressive one")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    runners = {
        "bits": part_bits,
        "samples": part_samples,
        "speed": part_speed,
        "infill": part_infill,
    }
    results: dict = {
        "mdlm": str(args.mdlm),
        "ar": str(args.ar),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    for part in parts:
        print(f"running {part} ...", file=sys.stderr)
        results[part] = runners[part](mdlm, ar, args)
    print_tables(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
