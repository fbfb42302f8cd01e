"""`diffuse train RECIPE`: run a training recipe (also under torchrun)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from diffuse.cli.arguments import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse train RECIPE.toml`: run a training recipe (also under torchrun)."""
    p = sub.add_parser(
        "train",
        help="train a model from a TOML recipe",
        description="Train from a recipe (see configs/). Under `torchrun --nproc-per-node N -m "
        "diffuse train ...` the global batch is split across the processes.",
    )
    p.add_argument("recipe", help="recipe file (.toml or .json)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value (repeatable), e.g. --set optim.lr=2e-4",
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<recipe name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest complete checkpoint",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved recipe as TOML and exit"
    )
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a bar")
    p.set_defaults(func=run)


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if rank == 0
        else f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(args: argparse.Namespace) -> int:
    """`diffuse train`: load the recipe, then print it (--dry-run) or train it."""
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
