"""Prompt adherence of a text-to-image Shapes model on prompts it never saw in training.

Every prompt set is drawn from the held-out Shapes splits (`diffuse.shapes.scenes`), which
training never shows (a lone held-out object, or a held-out object pair together). The original
sets (`--sets templates`, the default, unchanged since they were first reported):

- one-object: `heldout-1` scenes, one caption each (training-template vocabulary);
- one-to-three: `heldout` scenes (1, 2 or 3 objects, uniform), one caption each;
- paraphrases: the same one-to-three scenes described in the paraphrase vocabulary, whose
  content words never occur in training captions ("a crimson disc in the northwest").

The caption-grammar sets (`--sets grammar`, `diffuse.shapes.grammar`):

- grammar-one-object, grammar-one-to-three, grammar-three-object: `heldout-1`, `heldout` and
  `heldout-3` scenes described in the training grammar (forms and words a grammar-trained model
  saw, on scenes it never saw), with its user noise;
- heldout-grammar: the `heldout` scenes in the held-out grammar (forms never trained on, and
  held-out words where the scene allows);
- paraphrase-one-object: the `heldout-1` scenes in the paraphrase vocabulary;
- negative: "a <colour> <shape>" (random colour and shape) with the colour as the negative
  prompt; the score is the fraction of images with no object of that colour.

One image per prompt, seed = its index, the pipeline's default settings (EMA weights, dpmpp_2m,
Karras, 25 steps, the model's guidance). The score is the evaluator's fraction of prompts fully
satisfied (shape, colour, size, position and relations, object count), with the per-attribute
breakdown. Also checks that no prompt string occurs among the training captions of the recipe.

    python benchmarks/shapes_adherence.py --json adherence.json            # bundled model
    python benchmarks/shapes_adherence.py --sets all --json all.json       # every set
    python benchmarks/shapes_adherence.py --model runs/shapes-t2i -n 300
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.shapes.evaluator import detect_objects, score_detections
from diffuse.shapes.grammar import grammar_caption, heldout_grammar_caption
from diffuse.shapes.scenes import COLOURS, SHAPES, caption, paraphrase, sample_split_scene

EVAL_SEED = 7  # scene stream of the evaluation prompts (training uses seed 0)
TEMPLATE_SETS = ("one-object", "one-to-three", "paraphrases")
GRAMMAR_SETS = (
    "grammar-one-object",
    "grammar-one-to-three",
    "grammar-three-object",
    "heldout-grammar",
    "paraphrase-one-object",
    "negative",
)


def prompt_sets(n: int, seed: int = EVAL_SEED) -> dict[str, list[str]]:
    """The original three prompt lists (see the module docstring)."""
    singles = [sample_split_scene(seed, i, "heldout-1") for i in range(n)]
    mixed = [sample_split_scene(seed, i, "heldout") for i in range(n)]
    return {
        "one-object": [caption(s, seed, i) for i, s in enumerate(singles)],
        "one-to-three": [caption(s, seed, i) for i, s in enumerate(mixed)],
        "paraphrases": [paraphrase(s, seed, i) for i, s in enumerate(mixed)],
    }


def grammar_sets(n: int, seed: int = EVAL_SEED) -> dict[str, list[str]]:
    """The caption-grammar prompt lists but the negative one (see the module docstring)."""
    singles = [sample_split_scene(seed, i, "heldout-1") for i in range(n)]
    mixed = [sample_split_scene(seed, i, "heldout") for i in range(n)]
    triples = [sample_split_scene(seed, i, "heldout-3") for i in range(n)]
    return {
        "grammar-one-object": [grammar_caption(s, seed, i) for i, s in enumerate(singles)],
        "grammar-one-to-three": [grammar_caption(s, seed, i) for i, s in enumerate(mixed)],
        "grammar-three-object": [grammar_caption(s, seed, i) for i, s in enumerate(triples)],
        "heldout-grammar": [heldout_grammar_caption(s, seed, i) for i, s in enumerate(mixed)],
        "paraphrase-one-object": [paraphrase(s, seed, i) for i, s in enumerate(singles)],
    }


def negative_set(n: int, seed: int = EVAL_SEED) -> tuple[list[str], list[str]]:
    """n prompts "a <colour> <shape>" (random) and their negative prompts, the colour."""
    rng = np.random.default_rng([seed, 9_000_001])
    colours, shapes = list(COLOURS), list(SHAPES)
    pairs = [(colours[rng.integers(8)], shapes[rng.integers(4)]) for _ in range(n)]
    prompts = [("an " if c[0] in "aeiou" else "a ") + f"{c} {s}" for c, s in pairs]
    return prompts, [c for c, _ in pairs]


def training_captions(model_info: dict) -> set[str]:
    """Every caption of the recipe's training data (scenes source only), and of the recipes of
    the models it was fine-tuned from (its `base_model` chain)."""
    from diffuse.config import TrainConfig, from_dict
    from diffuse.training.datasets import ScenesDataset

    captions: set[str] = set()
    record: dict | None = model_info
    while record is not None:
        cfg = from_dict(TrainConfig, record["recipe"])
        if cfg.data.source == "scenes":
            ds = ScenesDataset(
                cfg.data.size, cfg.data.resolution, seed=cfg.train.seed, captions=cfg.data.captions
            )
            captions |= {ds.scenes.caption(i) for i in range(len(ds))}
        record = record.get("base_model")
    return captions


def _generate(pipe, prompts: list[str], batch: int, settings: dict, negatives=None):
    """One image per prompt (seed = its index), in batches; float NCHW in [-1, 1]."""
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        seeds = list(range(start, start + len(chunk)))  # seed = prompt index
        params = pipe.params("", seeds=seeds, **settings)
        negative = None if negatives is None else negatives[start : start + batch]
        images.append(pipe.generate(params, prompts=chunk, negative_prompts=negative))
    return torch.cat(images)


def _selected(spec: str) -> list[str]:
    """--sets: 'templates', 'grammar', 'all' or a comma-separated list of set names."""
    groups = {
        "templates": list(TEMPLATE_SETS),
        "grammar": list(GRAMMAR_SETS),
        "all": [*TEMPLATE_SETS, *GRAMMAR_SETS],
    }
    if spec in groups:
        return groups[spec]
    names = spec.split(",")
    unknown = [name for name in names if name not in (*TEMPLATE_SETS, *GRAMMAR_SETS)]
    if unknown:
        raise SystemExit(f"unknown prompt set {unknown[0]!r} (see --help)")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    ap.add_argument("-n", type=int, default=300, help="prompts per set (default 300)")
    ap.add_argument("--batch", type=int, default=50, help="prompts generated per batch")
    ap.add_argument(
        "--prompt-seed",
        type=int,
        default=EVAL_SEED,
        help=f"scene stream of the prompts (default {EVAL_SEED}, the reported set; use another "
        "one to choose settings without looking at it)",
    )
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale (model default)")
    ap.add_argument("--sampler", default=None, help="sampler (model default)")
    ap.add_argument("--schedule", default=None, help="noise schedule (model default)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    ap.add_argument(
        "--sets",
        default="templates",
        help="'templates' (the original three sets, default), 'grammar', 'all', or names: "
        + ", ".join((*TEMPLATE_SETS, *GRAMMAR_SETS)),
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument(
        "--skip-seen-check",
        action="store_true",
        help="do not re-create the recipe's training captions to count prompts seen in training",
    )
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON (after every set)")
    args = ap.parse_args(argv)
    names = _selected(args.sets)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    settings = {
        "guidance": args.guidance,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "steps": args.steps,
    }
    everything = prompt_sets(args.n, args.prompt_seed)
    if set(names) & set(GRAMMAR_SETS):
        everything |= grammar_sets(args.n, args.prompt_seed)
    negative_prompts, negative_colours = negative_set(args.n, args.prompt_seed)
    everything["negative"] = negative_prompts
    sets = {name: everything[name] for name in names}
    if args.skip_seen_check:
        overlap: dict[str, int | None] = dict.fromkeys(sets)
    else:
        seen = training_captions(pipe.model.info.to_dict())
        overlap = {name: sum(p in seen for p in prompts) for name, prompts in sets.items()}
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    reports = {}
    out = {
        "model": pipe.name,
        "model_hash": pipe.model_hash,
        "settings": pipe.params("", **settings).for_seed(0) | {"prompt": None, "seed": None},
        "prompt_seed": args.prompt_seed,
        "prompts_per_set": args.n,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "results": results,
    }
    for name, prompts in sets.items():
        started = time.perf_counter()
        if name == "negative":
            images = _generate(pipe, prompts, args.batch, settings, negative_colours)
            detections = detect_objects(images)
            clean = [
                all(d.colour != c for d in dets) for dets, c in zip(detections, negative_colours)
            ]
            results[name] = {"n": len(prompts), "score": sum(clean) / max(len(clean), 1)}
        else:
            images = _generate(pipe, prompts, args.batch, settings)
            reports[name] = score_detections(detect_objects(images), prompts)
            results[name] = reports[name].summary()
        results[name]["prompts_seen_in_training"] = overlap[name]
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {100 * results[name]['score']:.1f}%", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    elapsed = time.perf_counter() - t0
    counts = {}
    for set_name, split in (("one-to-three", "heldout"), ("grammar-one-to-three", "heldout")):
        if set_name not in reports:
            continue
        mixed_scenes = [sample_split_scene(args.prompt_seed, i, split) for i in range(args.n)]
        by_count = {}
        for k in (1, 2, 3):
            idx = [i for i, s in enumerate(mixed_scenes) if len(s.objects) == k]
            hits = sum(reports[set_name].results[i].satisfied for i in idx)
            by_count[k] = {"n": len(idx), "score": hits / max(len(idx), 1)}
        results[set_name]["by_object_count"] = by_count
        counts[set_name] = by_count
    out["seconds"] = round(elapsed, 1)
    print(f"model {pipe.name} ({pipe.model_hash}), {args.n} prompts per set, {elapsed:.0f} s")
    print("| prompt set | score | shape | colour | size | position | count | seen in training |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        b = {k: f"{100 * v:.1f}%" for k, v in r.get("breakdown", {}).items()}
        print(
            f"| {name} | {100 * r['score']:.1f}% | {b.get('shape', '-')} | "
            f"{b.get('colour', '-')} | {b.get('size', '-')} | {b.get('position', '-')} | "
            f"{b.get('count', '-')} | {r['prompts_seen_in_training']} |"
        )
    for set_name, by_count in counts.items():
        shown = {k: f"{100 * v['score']:.1f}% of {v['n']}" for k, v in by_count.items()}
        print(f"{set_name} by object count:", shown)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
