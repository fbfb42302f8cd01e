"""The work behind `diffuse train` and `diffuse sample` (parsing lives in diffuse.cli)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["parse_seeds", "run_sample", "run_train"]


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if rank == 0
        else f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_train(args: argparse.Namespace) -> int:
    """`diffuse train`: load the recipe, then print it (--dry-run) or train it."""
    from diffuse.cli import CliError
    from diffuse.config import VAETrainConfig, load_recipe, to_toml

    cfg = load_recipe(args.recipe, args.set)
    if isinstance(cfg, VAETrainConfig):
        return _run_train_vae(cfg, args)
    if args.dry_run:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        per_rank = cfg.optim.batch_size // world
        micro = cfg.optim.micro_batch or per_rank
        accumulation = -(-per_rank // micro)
        print(f"# resolved recipe {args.recipe}")
        print(
            f"# {world} process(es) x {per_rank} images per step, {accumulation} "
            f"micro-batch(es) of <= {micro}; {cfg.train.steps} steps = "
            f"{cfg.train.steps * cfg.optim.batch_size:,} images"
        )
        print(to_toml(cfg))
        return 0
    _setup_logging()
    from diffuse.training.loop import NonFiniteError, train

    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    try:
        result = train(cfg, out, resume=args.resume, progress=False if args.no_progress else None)
    except NonFiniteError as err:
        raise CliError(str(err)) from None
    if result.model_dir is not None:
        print(f"trained {result.step} steps; model in {result.model_dir}")
    return 0


def _run_train_vae(cfg: object, args: argparse.Namespace) -> int:
    """`diffuse train` on an autoencoder recipe (a [vae] table)."""
    from diffuse.cli import CliError
    from diffuse.config import to_toml

    if args.dry_run:
        print(f"# resolved autoencoder recipe {args.recipe}")
        print(to_toml(cfg))
        return 0
    _setup_logging()
    from diffuse.training.loop import NonFiniteError
    from diffuse.training.vae_loop import train_vae

    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    try:
        result = train_vae(
            cfg, out, resume=args.resume, progress=False if args.no_progress else None
        )
    except (NonFiniteError, ValueError) as err:
        raise CliError(str(err)) from None
    print(f"trained {result.step} steps; autoencoder in {result.model_dir}")
    return 0


def parse_seeds(items: list[str]) -> list[int]:
    """Seeds from '3 5 7', '0-15' or a mix; raises ValueError naming a bad item."""
    seeds: list[int] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1)
                    a, b = int(lo), int(hi)
                    if b < a:
                        raise ValueError
                    seeds.extend(range(a, b + 1))
                else:
                    seeds.append(int(part))
            except ValueError:
                raise ValueError(f"bad seed {part!r}: use integers or ranges like 0-15") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {seeds}")
    return seeds


def run_sample(args: argparse.Namespace) -> int:
    """`diffuse sample`: a PNG grid from a trained model."""
    import math

    from diffuse.cli import CliError
    from diffuse.pipelines.sample import generate, load_trained, save_grid

    model = load_trained(args.model, device=args.device)
    defaults = model.info.get("sample", {})
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.n))
    if not seeds:
        raise CliError("no seeds given")
    if args.n < 1:
        raise CliError(f"-n must be >= 1, got {args.n}")
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
    guidance = args.guidance if args.guidance is not None else float(defaults.get("guidance", 1))
    if guidance < 0:
        raise CliError(f"--guidance must be >= 0, got {guidance}")
    steps = args.steps if args.steps is not None else int(defaults.get("steps", 25))
    if steps < 1:
        raise CliError(f"--steps must be >= 1, got {steps}")
    sampler = args.sampler or defaults.get("sampler", "dpmpp_2m")
    schedule = args.schedule or defaults.get("schedule", "karras")
    try:
        images = generate(
            model.denoiser,
            model.shape,
            seeds,
            labels=labels,
            null_label=model.null_label,
            sampler=sampler,
            schedule=schedule,
            steps=steps,
            guidance=guidance if labels is not None else 1.0,
            device=args.device,
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
    }
    path = save_grid(model.decode(images), args.output, nrow=nrow, params=params)
    print(f"wrote {len(seeds)} samples to {path}")
    return 0
