"""`diffuse sample --model DIR`: a PNG grid of samples from a trained model."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from diffuse.cli.arguments import (
    CliError,
    add_seeds_option,
    check_outputs,
    parse_seeds,
    progress_bar,
    warning_lines,
)
from diffuse.fitted_solvers import FITTED, choose_solver, read_solvers
from diffuse.pipelines.sample import generate, load_trained, save_grid

# Images per sampler call (results do not depend on it); the progress bar counts its batches.
BATCH_SIZE = 64


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse sample --model DIR`: a grid of samples from a trained model."""
    p = sub.add_parser(
        "sample",
        help="sample a grid from a model trained with `diffuse train`",
        description="Sample images from a trained model folder (or run folder) into a PNG grid.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model, run or diffusers folder")
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="C",
        help="class index or name (repeatable; default: cycle through all classes)",
    )
    p.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    add_seeds_option(p, several_words=True)
    p.add_argument("--sampler", help="sampler name (default: the recipe's)")
    p.add_argument("--schedule", help="schedule name (default: the recipe's)")
    p.add_argument(
        "--steps",
        type=int,
        help="sampler steps (default: the recipe's); a solver fitted for this count by "
        "`diffuse fit-solver` runs unless --sampler or --schedule is given",
    )
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--nrow", type=int, help="images per grid row")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", default="samples.png", help="output PNG (default samples.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`diffuse sample`: a PNG grid from a trained model."""
    with warning_lines("sample"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise CliError(f"output must be a .png file, got {args.output!r}")
    if args.n < 1:
        raise CliError(f"-n must be >= 1, got {args.n}")
    seeds = parse_seeds(args.seeds) or list(range(args.n))
    check_outputs([output], args.overwrite)  # before the model loads and anything is sampled
    model = load_trained(args.model, device=args.device)
    defaults = model.info.sampling  # model_folder.SamplingDefaults
    labels = None
    if model.num_classes:
        wanted = []
        for c in args.classes:
            if c in model.class_names:
                wanted.append(model.class_names.index(c))
            elif c.lstrip("-").isdigit() and 0 <= int(c) < model.num_classes:
                wanted.append(int(c))
            else:
                raise CliError(
                    f"--class {c!r} is not a class of this model; valid: 0..{model.num_classes - 1}"
                    f" or {', '.join(model.class_names)}"
                )
        cycle = wanted or list(range(model.num_classes))
        labels = [cycle[i % len(cycle)] for i in range(len(seeds))]
    elif args.classes:
        raise CliError("this model is unconditional; --class does not apply")
    guidance = args.guidance if args.guidance is not None else defaults.guidance
    if guidance < 0:
        raise CliError(f"--guidance must be >= 0, got {guidance}")
    steps = args.steps if args.steps is not None else defaults.steps
    if steps < 1:
        raise CliError(f"--steps must be >= 1, got {steps}")
    guided = guidance if labels is not None else 1.0
    fitted = choose_solver(
        read_solvers(model.folder),
        steps,
        sampler=args.sampler,
        schedule=args.schedule,
        guidance=guided,
        fallback=args.sampler or defaults.sampler,
        steps_given=args.steps is not None,
    )
    if fitted is not None:
        sampler = schedule = FITTED
        print(
            f"diffuse sample: sampling with the solver fitted for {steps} steps ({fitted.digest})",
            file=sys.stderr,
        )
    else:
        sampler = args.sampler or defaults.sampler
        schedule = args.schedule or defaults.schedule
    batches = math.ceil(len(seeds) / BATCH_SIZE)
    try:
        with progress_bar(steps * batches, "sample", not args.no_progress) as callback:
            images = generate(
                model.denoiser,
                model.shape,
                seeds,
                labels=labels,
                null_label=model.null_label,
                sampler=sampler,
                schedule=schedule,
                steps=steps,
                guidance=guided,
                device=args.device,
                batch_size=BATCH_SIZE,
                callback=callback,
                solver=None if fitted is None else fitted.coefficients,
            )
    except KeyError as err:
        raise CliError(f"unknown sampler or schedule: {err}") from None
    nrow = args.nrow or (len(seeds) if len(seeds) <= 10 else math.ceil(math.sqrt(len(seeds))))
    params = {
        "model": str(args.model),
        "seeds": seeds,
        "labels": labels,
        "sampler": sampler,
        "schedule": schedule,
        "steps": steps,
        "guidance": guidance,
        **({"solver": fitted.digest} if fitted is not None else {}),
    }
    path = save_grid(
        model.decode(images), output, nrow=nrow, params=params, overwrite=args.overwrite
    )
    print(f"wrote {len(seeds)} samples to {path}")
    return 0
