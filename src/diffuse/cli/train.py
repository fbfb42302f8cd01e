"""`diffuse train RECIPE`: run a training recipe (also under torchrun).

The library imports (torch, the trainers, pipelines) happen inside `run`: together they take
~3.8 s (measured: `import diffuse.training.loop, diffuse.pipelines.sample` after
`import diffuse.cli`), which `diffuse --help` and every other command would otherwise pay.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from diffuse.cli.arguments import CliError

INTERRUPTED = 130  # the shell's exit status for a process ended by SIGINT


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse train RECIPE.toml`: run a training recipe (also under torchrun)."""
    p = sub.add_parser(
        "train",
        help="train a model from a TOML recipe",
        description="Train from a recipe (see configs/). Under `torchrun --nproc-per-node N -m "
        "diffuse train ...` the global batch is split across the processes. With --resume the "
        "run continues with the settings it was started with (stored in the run folder); "
        "--set on resume changes only what a resume may change (train.steps, log.*, ...).",
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
        help="continue the run in --out from its newest complete checkpoint, with its settings",
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


def _recipe(args: argparse.Namespace, out: Path) -> Any:
    """The recipe to train: on --resume of an existing run, the run's own resolved recipe with
    this call's --set on top; otherwise the recipe file with --set."""
    from diffuse.config import load_recipe
    from diffuse.training.run_folder import RUN_FILE, run_recipe

    if args.resume and (out / RUN_FILE).is_file():
        cfg = run_recipe(out, args.set)
        logging.getLogger(__name__).info(
            "resuming %s with the run's own settings%s",
            out,
            f" and {', '.join(args.set)}" if args.set else "",
        )
        return cfg
    return load_recipe(args.recipe, args.set)


def run(args: argparse.Namespace) -> int:
    """`diffuse train`: load the recipe, then print it (--dry-run) or train it."""
    from diffuse.config import TextTrainConfig, VAETrainConfig
    from diffuse.training.run_loop import NonFiniteError, TrainingInterrupted

    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    if not args.dry_run:
        _setup_logging()
    cfg = _recipe(args, out)
    if args.dry_run:
        _print_recipe(cfg, args)
        return 0
    try:
        if isinstance(cfg, VAETrainConfig):
            return _run_train_vae(cfg, args, out)
        if isinstance(cfg, TextTrainConfig):
            return _run_train_text(cfg, args, out)
        return _run_train(cfg, args, out)
    except NonFiniteError as err:
        raise CliError(str(err)) from None
    except TrainingInterrupted as stop:
        again = ["diffuse", "train", args.recipe, "--out", str(out), "--resume"]
        print(
            f"interrupted at step {stop.step}; continue with: {shlex.join(again)}", file=sys.stderr
        )
        return INTERRUPTED


def _print_recipe(cfg: Any, args: argparse.Namespace) -> None:
    """--dry-run: the resolved recipe as TOML (with the batch split of a diffusion recipe)."""
    from diffuse.config import TextTrainConfig, VAETrainConfig, to_toml

    if isinstance(cfg, TextTrainConfig):
        tokens = cfg.train.steps * cfg.optim.batch_size * cfg.text.length
        print(f"# resolved text recipe {args.recipe}: {tokens:,} training characters")
        print(to_toml(cfg))
        return
    if isinstance(cfg, VAETrainConfig):
        print(f"# resolved autoencoder recipe {args.recipe}")
        print(to_toml(cfg))
        return
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


def _run_train(cfg: Any, args: argparse.Namespace, out: Path) -> int:
    """Train a diffusion recipe, with sample grids drawn through pipelines."""
    from diffuse.training.loop import train

    result = train(
        cfg,
        out,
        resume=args.resume,
        progress=False if args.no_progress else None,
        on_sample=draw_sample_grid,
    )
    if result.model_dir is not None:
        print(f"trained {result.step} steps; model in {result.model_dir}")
    return 0


def _run_train_vae(cfg: Any, args: argparse.Namespace, out: Path) -> int:
    """Train an autoencoder recipe (a [vae] table)."""
    from diffuse.training.vae_loop import train_vae

    try:
        result = train_vae(
            cfg, out, resume=args.resume, progress=False if args.no_progress else None
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    print(f"trained {result.step} steps; autoencoder in {result.model_dir}")
    return 0


def _run_train_text(cfg: Any, args: argparse.Namespace, out: Path) -> int:
    """Train a text model recipe (a [text] table): masked diffusion or autoregressive."""
    from diffuse.training.text_loop import train_text

    result = train_text(cfg, out, resume=args.resume, progress=False if args.no_progress else None)
    score = result.validation
    tail = f"; validation {score.bits_per_char:.4f} bits/char" if score is not None else ""
    print(f"trained {result.step} steps; text model in {result.model_dir}{tail}")
    return 0


def draw_sample_grid(request: Any) -> None:
    """The trainer's sample-grid callback: sample the EMA model at the recipe's [sample]
    settings and write a grid (one row per class when the seeds fill whole rows).

    Args:
        request: a `diffuse.training.loop.SampleRequest`.
    """
    from diffuse.pipelines.sample import generate, save_grid

    s, n, device = request.sample, request.num_classes, request.device
    labels = [i % n for i in range(len(s.seeds))] if n else None
    cond, uncond = None, None
    if request.text_encoder is not None:
        prompts = [s.prompts[i % len(s.prompts)] if s.prompts else "" for i in s.seeds]
        encoded = request.text_encoder.encode(prompts).as_cond()
        cond = {k: v.to(device) for k, v in encoded.items()}
        empty = request.text_encoder.encode([""]).as_cond()
        uncond = {k: v.to(device) for k, v in empty.items()}
    images = generate(
        request.denoiser,
        request.shape,
        list(s.seeds),
        labels=labels,
        null_label=request.null_label,
        cond=cond,
        uncond=uncond,
        sampler=s.sampler,
        schedule=s.schedule,
        steps=s.steps,
        guidance=s.guidance,
        device=device,
    )
    if request.codec is not None:
        images = request.codec.decode(images.cpu())
    if request.is_main:
        nrow = n if n and len(s.seeds) % n == 0 else math.ceil(math.sqrt(len(s.seeds)))
        save_grid(images, request.path, nrow=nrow)
