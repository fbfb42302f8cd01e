"""`diffuse text generate | infill | eval`: sample, fill in and score trained text models
(masked diffusion or the autoregressive baseline; `diffuse train configs/shakespeare-*.toml`)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

from diffuse.cli.arguments import CliError, add_seeds_option, progress_bar, seed_list
from diffuse.pipelines.text import evaluate_text, generate_text, infill_text, validation_windows
from diffuse.text.sampling import TEXT_SAMPLERS, Decoding
from diffuse.text.template import MASK_SYNTAX
from diffuse.text_model_folder import TextModel, load_text_model


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse text {generate, infill, eval}`."""
    p = sub.add_parser(
        "text",
        help="generate, infill and score with a text model",
        description="Text models: masked diffusion (MDLM / LLaDA samplers) and its "
        "autoregressive baseline, trained by `diffuse train configs/shakespeare-mdlm.toml` "
        "(or shakespeare-ar.toml).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    g = actions.add_parser("generate", help="generate text (optionally after a prompt)")
    _model_options(g)
    g.add_argument("--length", type=int, default=256, help="characters to generate (256)")
    g.add_argument("--prompt", default="", help="given text the generated characters follow")
    g.add_argument(
        "--block-length",
        type=int,
        default=0,
        metavar="N",
        help="diffusion: semi-autoregressive blocks of N characters, left to right (0: none)",
    )
    _sampling_options(g)
    g.set_defaults(func=run_generate)

    i = actions.add_parser(
        "infill",
        help="fill the gaps of a template (diffusion models)",
        description=f"Fill the gaps of TEMPLATE. Mask syntax: {MASK_SYNTAX}. "
        'Example: diffuse text infill --model models/shakespeare-mdlm "ROMEO: [____] my lord"',
    )
    i.add_argument("template", help='e.g. "ROMEO: [____] my lord" or "ROMEO: [12] my lord"')
    _model_options(i)
    _sampling_options(i)
    i.set_defaults(func=run_infill)

    e = actions.add_parser(
        "eval",
        help="validation bits per character (diffusion: the ELBO bound with its error)",
        description="Score a text model on the held-out tail of its training corpus, cut into "
        "windows of its trained length: a diffusion model's negative ELBO bound (an upper "
        "bound on its NLL) with the Monte Carlo standard error, or an autoregressive model's "
        "exact NLL, in bits per character.",
    )
    _model_options(e)
    e.add_argument("--data", metavar="FILE", help="another corpus (default: the recipe's)")
    e.add_argument("--windows", type=int, default=0, help="score the first N windows (0: all)")
    e.add_argument("--times", type=int, default=8, help="diffusion times per window (even)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bound's times and masks")
    e.add_argument("--batch-size", type=int, default=64, help="sequences per network call")
    e.set_defaults(func=run_eval)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="text model or run folder")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (model default)")
    p.add_argument(
        "--sampler", choices=TEXT_SAMPLERS, default=None, help="diffusion sampler (model default)"
    )
    p.add_argument("-n", type=int, default=None, help="number of samples (default 1)")
    add_seeds_option(p)
    p.add_argument("--temperature", type=float, default=1.0, help="logit temperature (1)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k likeliest characters")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus probability (1: off)")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="diffusion: run the network on every step (the cache skips unchanged steps; "
        "output is identical)",
    )


def _load(args: argparse.Namespace) -> TextModel:
    return load_text_model(args.model, device=args.device)


def _seeds(args: argparse.Namespace) -> list[int]:
    return seed_list(args.seeds, args.n)


def _decoding(args: argparse.Namespace) -> Decoding:
    try:
        return Decoding(args.temperature, args.top_k, args.top_p)
    except ValueError as err:
        raise CliError(str(err)) from None


def _counting(callback: Callable[[object], None]) -> tuple[list[int], Callable[[object], None]]:
    """A step callback that also counts network evaluations."""
    evaluations = [0]

    def step(info: object) -> None:
        evaluations[0] += int(getattr(info, "evaluated", True))
        callback(info)

    return evaluations, step


def run_generate(args: argparse.Namespace) -> int:
    """`diffuse text generate`."""
    model = _load(args)
    seeds, decoding = _seeds(args), _decoding(args)
    if not model.is_diffusion and (args.sampler or args.block_length):
        raise CliError("--sampler and --block-length apply to diffusion models only")
    if args.length < 1:
        raise CliError(f"--length must be >= 1, got {args.length}")
    steps = args.steps if model.is_diffusion else args.length
    total = (steps or model.info.steps) if model.is_diffusion else args.length
    with progress_bar(total, "text generate", not args.no_progress) as bar:
        evaluations, step = _counting(bar)
        texts = generate_text(
            model,
            args.length,
            seeds,
            steps=args.steps,
            prompt=args.prompt,
            sampler=args.sampler,
            block_length=args.block_length,
            decoding=decoding,
            cache=not args.no_cache,
            callback=step,
        )
    if args.json:
        doc = {
            "model": str(model.folder),
            "objective": model.info.objective,
            "length": args.length,
            "steps": total,
            "network_evaluations": evaluations[0],
            "sampler": (args.sampler or model.info.sampler) if model.is_diffusion else "ar",
            "samples": [{"seed": s, "text": t} for s, t in zip(seeds, texts)],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for seed, text in zip(seeds, texts):
        if len(seeds) > 1:
            print(f"--- seed {seed} ---")
        print(text)
    return 0


def run_infill(args: argparse.Namespace) -> int:
    """`diffuse text infill`."""
    model = _load(args)
    seeds, decoding = _seeds(args), _decoding(args)
    with progress_bar(args.steps or model.info.steps, "text infill", not args.no_progress) as bar:
        results = infill_text(
            model,
            args.template,
            seeds,
            steps=args.steps,
            sampler=args.sampler,
            decoding=decoding,
            cache=not args.no_cache,
            callback=bar,
        )
    if args.json:
        doc = {
            "model": str(model.folder),
            "template": args.template,
            "samples": [{"seed": r.seed, "text": r.text, "gaps": r.gaps} for r in results],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for r in results:
        if len(results) > 1:
            print(f"--- seed {r.seed} ---")
        print(r.text)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """`diffuse text eval`."""
    model = _load(args)
    if args.windows < 0:
        raise CliError(f"--windows must be >= 0, got {args.windows}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if model.is_diffusion and (args.times < 2 or args.times % 2):
        raise CliError(f"--times must be even and >= 2, got {args.times}")
    n = len(validation_windows(model, args.data, args.windows))
    per_window = args.times if model.is_diffusion else 1
    batches = math.ceil(n * per_window / args.batch_size)
    with progress_bar(batches, "text eval", not args.no_progress) as bar:
        score = evaluate_text(
            model,
            data=args.data,
            windows=args.windows,
            times=args.times,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=lambda done, total: bar(None),
        )
    kind = "MDLM bound" if model.is_diffusion else "AR NLL"
    if args.json:
        doc = {"model": str(model.folder), "objective": model.info.objective, **score.to_dict()}
        print(json.dumps(doc, indent=2))
        return 0
    error = f" +- {score.standard_error:.4f} (Monte Carlo s.e.)" if model.is_diffusion else ""
    detail = f", {score.times} times each" if model.is_diffusion else ""
    print(
        f"{kind}: {score.bits_per_char:.4f}{error} bits/char on {score.windows} validation "
        f"windows of {score.length}{detail}"
    )
    return 0
