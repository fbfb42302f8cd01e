"""`diffuse fit-solver --model DIR --steps N [N ...]`: fit few-step solvers to a trained model.

For each N: a schedule and bespoke solver coefficients (`samplers.bespoke.fit_candidates`) are
fitted against the model's own many-step solution (UniPC-3, --reference-steps Karras steps),
from noises paired with conditioning drawn from the model's training distribution (Shapes
captions for a Shapes text model, or the lines of --prompts FILE for any text model, e.g. an
imported Stable Diffusion; classes for a class model), through the model's default
classifier-free guidance. The solver is then judged on held-out noises and conditioning against
the best plain sampler at the same N; it is saved in the model folder
(`diffuse.fitted_solvers`) only when it beats it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from diffuse.cli.arguments import CliError, warning_lines
from diffuse.denoiser import Cond
from diffuse.fitted_solvers import FittedSolver, read_solvers, save_solver
from diffuse.guidance import classifier_free_guidance
from diffuse.model_folder import SOLVERS_FILE, TrainedModel, load_model
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.samplers.base import DenoiseFn
from diffuse.samplers.bespoke import CANDIDATES, bespoke, fit_candidates
from diffuse.samplers.fit import reference_endpoints, weighted_mse
from diffuse.samplers.noise import SeededNoise
from diffuse.samplers.registry import get_sampler, get_schedule
from diffuse.shapes import caption, sample_split_scene, vocabulary

# The plain samplers a fitted solver must beat, each with the model's schedule and Karras.
BASELINES = ("dpmpp_2m", "dpmpp_3m", "unipc", "deis")
# Fitting effort at full scale (scaled down to fit --max-minutes): schedule-search runs and
# L-BFGS evaluations per candidate, as `fit_solver`'s defaults.
BUDGET, ITERATIONS = 100, 48
BACKWARD_COST = 3.0  # a forward plus backward pass through the network, in forward calls


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse fit-solver`."""
    p = sub.add_parser(
        "fit-solver",
        help="fit few-step solvers to a trained model (stored in its folder)",
        description="Fit a schedule and solver coefficients for N network calls against the "
        "model's own many-step solution, with its default guidance and conditioning drawn from "
        "its training distribution; `generate`/`sample --steps N` then use it. A solver no "
        "better on held-out noises than the best plain sampler at N calls is not saved.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder or run folder")
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        required=True,
        metavar="N",
        help="network calls of a solver (one fit for each N)",
    )
    p.add_argument(
        "--max-minutes", type=float, default=10.0, help="bound on the fitting time (default 10)"
    )
    p.add_argument(
        "--conditions", type=int, default=8, help="captions or classes per batch (default 8)"
    )
    p.add_argument(
        "--noises", type=int, default=4, help="noises per condition in the fit (default 4)"
    )
    p.add_argument(
        "--reference-steps", type=int, default=64, help="steps of the reference (default 64)"
    )
    p.add_argument(
        "--effort",
        type=float,
        default=1.0,
        help="share of the full fitting budget (default 1; less when --max-minutes needs it)",
    )
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        metavar="FILE",
        help="text models: fit on these prompts (one per line) instead of Shapes captions",
    )
    p.add_argument("--seed", type=int, default=0, help="draws noises and conditioning")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace solvers already fitted")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`diffuse fit-solver`: fit, judge and store one solver per requested N."""
    with warning_lines("fit-solver"):
        return _run(args)


def read_prompts(path: Path) -> list[str]:
    """The non-empty lines of a prompts file (CliError naming a missing or empty file)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read --prompts {path}: {err}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise CliError(f"--prompts {path} holds no prompt")
    return prompts


def _conditioning(
    model: TrainedModel,
    count: int,
    seed: int,
    first: int,
    device: str,
    prompts: list[str] | None = None,
):
    """(cond, uncond, what) for `count` draws from the model's training distribution, or from
    `prompts` (draws first, first + 1, ... taken in turn) for a text model."""
    info = model.info
    if info.text_encoder:
        index = range(first, first + count)
        if prompts:
            texts = [prompts[i % len(prompts)] for i in index]
        elif not vocabulary.trained_on_shapes_captions(info.recipe):
            raise CliError(
                f"{model.folder}: fit-solver draws prompts from the Shapes captions, but this "
                "text model was not trained on them; give prompts with --prompts FILE"
            )
        else:
            texts = [caption(sample_split_scene(seed, i, "train"), seed, i) for i in index]
        pipeline = load_pipeline(model.folder, device=device)
        cond, uncond = pipeline.conditioning(texts), pipeline.conditioning([""])
        return (
            {k: v.to(device) for k, v in cond.items()},
            {k: v.to(device) for k, v in uncond.items()},
            f"{count} {'prompts from --prompts' if prompts else 'Shapes captions'}",
        )
    if model.num_classes:
        g = torch.Generator().manual_seed(seed * 1_000_003 + first)
        labels = torch.randint(0, model.num_classes, (count,), generator=g).to(device)
        null = torch.full((1,), model.null_label, device=device)
        return {"class_labels": labels}, {"class_labels": null}, f"{count} random classes"
    return None, None, "no conditioning"


def _denoise_fn(model: TrainedModel, cond: Cond, uncond: Cond, guidance: float) -> DenoiseFn:
    """denoise(x, level) for a batch whose row i has conditioning row i % len(cond)."""

    def tiled(c: Cond, batch: int) -> Cond:
        if c is None:
            return None
        out = {}
        for key, value in c.items():
            reps = math.ceil(batch / value.shape[0]) if value.shape[0] > 1 else 1
            out[key] = value.repeat(reps, *[1] * (value.ndim - 1))[:batch]
        return out

    def denoise(x: Tensor, level: Tensor) -> Tensor:
        c = tiled(cond, x.shape[0])
        if c is None or guidance == 1.0:
            return model.denoiser(x, level, c)
        return classifier_free_guidance(model.denoiser, c, uncond, guidance)(x, level)

    return denoise


def _noises(model: TrainedModel, count: int, seed: int, device: str) -> Tensor:
    process = model.denoiser.process
    seeds = [seed * 1_000_003 + i for i in range(count)]
    # the start generation uses (`pipelines.sample.generate`)
    return SeededNoise(seeds, device=device).initial(model.shape) * process.initial_std(
        process.level_max
    )


def _best_plain(denoise: DenoiseFn, model: TrainedModel, x: Tensor, target: Tensor, steps: int):
    """(name, mse) of the best plain sampler at `steps` calls on (x, target)."""
    process = model.denoiser.process
    results = []
    for schedule in dict.fromkeys([model.info.sampling.schedule, "karras"]):
        levels = get_schedule(schedule)(process, steps)
        for name in BASELINES:
            with torch.no_grad():
                out = get_sampler(name)(denoise, x, levels)
            results.append((float(weighted_mse(out, target)), f"{name}/{schedule}"))
    mse, name = min(results)
    return name, mse


def _run(args: argparse.Namespace) -> int:
    wanted = sorted(set(args.steps))
    if wanted[0] < 1:
        raise CliError(f"--steps must be >= 1, got {wanted[0]}")
    for name in ("max_minutes", "conditions", "noises", "reference_steps", "effort"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise CliError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.noises < 2:
        raise CliError(f"--noises must be >= 2 (one share is held out), got {args.noises}")
    if args.threads is not None:
        if args.threads < 1:
            raise CliError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    deadline = start + 60 * args.max_minutes
    model = load_model(args.model, device=args.device)
    # A damaged or foreign solver file, or a fit that would be replaced, stops here.
    taken = sorted(set(read_solvers(model.folder)) & set(wanted))
    if taken and not args.overwrite:
        raise CliError(
            f"{model.folder / SOLVERS_FILE} already holds solvers for "
            f"{', '.join(map(str, taken))} steps; pass --overwrite to replace them"
        )
    info, process = model.info, model.denoiser.process
    conditional = bool(info.text_encoder or info.class_names)
    guidance = info.sampling.guidance if conditional else 1.0
    prompts = read_prompts(args.prompts) if args.prompts is not None else None
    k = args.conditions
    cond, uncond, what = _conditioning(model, k, args.seed, 0, args.device, prompts)
    held_cond, held_uncond, _ = _conditioning(model, k, args.seed, k, args.device, prompts)
    fit_fn = _denoise_fn(model, cond, uncond, guidance)
    held_fn = _denoise_fn(model, held_cond, held_uncond, guidance)
    x = _noises(model, k * args.noises, args.seed, args.device)
    x_held = _noises(model, k * 2, args.seed + 1, args.device)
    span = {"level_min": process.level_min, "level_max": process.level_max}
    print(
        f"fitting {', '.join(map(str, wanted))} calls for {model.folder}: {what}, guidance "
        f"{guidance:g}, {x.shape[0]} fitting and {x_held.shape[0]} held-out noises"
    )
    t0 = time.monotonic()
    target = reference_endpoints(fit_fn, x, **span, steps=args.reference_steps)
    call = (time.monotonic() - t0) / args.reference_steps  # one call on the fitting batch
    target_held = reference_endpoints(held_fn, x_held, **span, steps=args.reference_steps)
    print(f"references: {time.monotonic() - t0:.1f} s ({args.reference_steps} steps)")
    saved = 0
    for i, steps in enumerate(wanted):
        left = deadline - time.monotonic()
        share = left / (len(wanted) - i)  # the time left, shared among the fits to come
        full = len(CANDIDATES) * steps * call * (BUDGET + BACKWARD_COST * ITERATIONS)
        scale = min(args.effort, share / full)
        budget, iterations = max(8, round(BUDGET * scale)), max(6, round(ITERATIONS * scale))
        if left <= 0:
            rest = ", ".join(map(str, wanted[i:]))
            print(f"--max-minutes {args.max_minutes:g} reached: not fitted for {rest} calls")
            break
        t1 = time.monotonic()
        found = fit_candidates(
            fit_fn, x, steps, **span, target=target, budget=budget, iterations=iterations
        )
        best = min(found, key=lambda c: c.validation_mse)
        with torch.no_grad():
            out = bespoke(held_fn, x_held, best.levels, coefficients=best.coefficients)
        mse = float(weighted_mse(out, target_held))
        baseline, baseline_mse = _best_plain(held_fn, model, x_held, target_held, steps)
        seconds = time.monotonic() - t1
        scores = f"held-out mse {mse:.3e} vs {baseline} {baseline_mse:.3e}"
        if not mse < baseline_mse:
            print(
                f"{steps} calls: not saved, the fitted solver is no better than the best plain "
                f"sampler ({scores}), {seconds:.1f} s"
            )
            continue
        solver = FittedSolver(
            coefficients=best.coefficients,
            guidance=guidance,
            base=best.base,
            order=best.order,
            validation_mse=mse,
            baseline=baseline,
            baseline_mse=baseline_mse,
            fit_seconds=round(seconds, 1),
        )
        path = save_solver(model.folder, solver)
        saved += 1
        print(
            f"{steps} calls: saved to {path} ({scores}, {baseline_mse / mse:.2f}x lower; "
            f"{best.base}-{best.order}, budget {budget}, {iterations} L-BFGS evaluations), "
            f"{seconds:.1f} s"
        )
    print(f"fitting time {time.monotonic() - start:.1f} s; {saved} solver(s) saved")
    return 0
