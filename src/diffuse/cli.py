"""The `diffuse` command line: parse arguments, build objects, call library functions.

Each subcommand lives in a small `_add_<name>` function that registers its parser and sets
`func`; the work itself is done by library code so that Python users get the same behaviour.
"""

from __future__ import annotations

import argparse
import sys

from diffuse import __version__


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="diffuse", description="Diffusion models toolkit.")
    parser.add_argument("--version", action="version", version=f"diffuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# Subcommand registrars, in the order they appear in `diffuse --help`. Later modules append here.
SUBCOMMANDS: list = []


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse eval`: FD, KID and class accuracy in the project's classifier features."""
    from diffuse.metrics.evaluate import DATASET_FILES

    p = sub.add_parser(
        "eval",
        help="score a model's samples against a dataset's held-out images",
        description="Frechet distance and KID (features of the project's classifier for the "
        "dataset) against its 5,000 held-out images, with the train-vs-held-out floor, and the "
        "fraction of samples classified as the class that was asked for.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="trained model folder to sample from")
    source.add_argument(
        "--samples", metavar="NPZ", help="saved samples: uint8 NHWC 'images', optional 'labels'"
    )
    p.add_argument("--dataset", required=True, choices=list(DATASET_FILES))
    p.add_argument(
        "-n", type=int, default=None, help="samples (default 10000, or all of --samples)"
    )
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument(
        "--guidance", type=float, default=None, help="CFG scale for --model (model default)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json
    import logging

    from diffuse.metrics import evaluate as ev

    if args.n is not None and args.n < 2:
        raise CliError(f"-n must be at least 2, got {args.n}")
    split = ev.load_split(args.dataset)  # a missing archive fails now, not after sampling
    if args.samples:
        images, labels = ev.load_samples(args.samples)
        if args.n is not None:
            if args.n > len(images):
                raise CliError(f"-n {args.n} exceeds the {len(images)} images in {args.samples}")
            images, labels = images[: args.n], None if labels is None else labels[: args.n]
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # sampling progress
        images, labels = ev.sample_model_for_eval(
            args.model,
            args.n or 10_000,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            batch_size=args.batch_size,
            device=args.device,
        )
    r = ev.evaluate_images(
        images, labels, args.dataset, batch_size=args.batch_size, device=args.device, split=split
    )
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    print(f"{r.dataset}: {r.n} samples vs {r.n_heldout} held-out images")
    print(f"{'metric':<16} {'samples':>20} {'floor':>10}   (floor: {r.n_floor} train images)")
    print(f"{'FD':<16} {r.fd:>20.4f} {r.fd_floor:>10.4f}")
    kid = f"{1e3 * r.kid:.4f} +- {1e3 * r.kid_std:.4f}"
    print(f"{'KID x 1e3':<16} {kid:>20} {1e3 * r.kid_floor:>10.4f}")
    if r.class_accuracy is not None:
        print(f"{'class accuracy':<16} {100 * r.class_accuracy:>19.2f}%")
    print(f"classifier accuracy on the held-out images: {100 * r.classifier_accuracy:.2f}%")
    return 0


SUBCOMMANDS.append(_add_eval)


def _add_train(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from diffuse.training.commands import run_train

    return run_train(args)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse sample --model DIR`: a grid of samples from a trained model."""
    p = sub.add_parser(
        "sample",
        help="sample a grid from a model trained with `diffuse train`",
        description="Sample images from a trained model folder (or run folder) into a PNG grid.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder or run folder")
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="C",
        help="class index or name (repeatable; default: cycle through all classes)",
    )
    p.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    p.add_argument(
        "--seeds", nargs="+", metavar="S", help="seeds, e.g. 0 1 2 or 0-15 (default: 0 .. n-1)"
    )
    p.add_argument("--sampler", help="sampler name (default: the recipe's)")
    p.add_argument("--schedule", help="schedule name (default: the recipe's)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the recipe's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--nrow", type=int, help="images per grid row")
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", default="samples.png", help="output PNG (default samples.png)")
    p.set_defaults(func=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from diffuse.training.commands import run_sample

    return run_sample(args)


SUBCOMMANDS.extend([_add_train, _add_sample])


def _add_generate(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse generate "PROMPT"`: text to image with the bundled or a trained model."""
    p = sub.add_parser(
        "generate",
        help="generate images from a text prompt",
        description="Generate images from a prompt with the bundled default model (or --model). "
        "Every PNG carries its generation parameters; --from-png FILE reproduces it exactly.",
    )
    p.add_argument("prompt", nargs="?", help='the prompt ("" for an unconditional image)')
    p.add_argument("-n", type=int, default=None, help="number of images (default 1)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default: 25)")
    p.add_argument("--sampler", default=None, help="sampler name (default dpmpp_2m)")
    p.add_argument("--schedule", default=None, help="noise schedule (default karras)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (model default)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="first seed (then seed+1, ...)")
    seeds.add_argument("--seeds", default=None, metavar="S,S,...", help="explicit seeds")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: bundled)")
    p.add_argument("--size", type=int, default=None, help="image side (the model's own)")
    p.add_argument("-o", "--output", default="out.png", help="output PNG (default out.png)")
    p.add_argument("--grid", action="store_true", help="one grid PNG instead of one per image")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--from-png", metavar="FILE", help="reproduce the image stored in FILE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from diffuse.pipelines.generate_command import run_generate

    return run_generate(args)


SUBCOMMANDS.append(_add_generate)


def _add_info(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse info`: parameters, FLOPs and memory of a network preset."""
    p = sub.add_parser(
        "info",
        help="parameters, GFLOPs and activation memory of a network preset",
        description="Parameters, GFLOPs per forward pass (one sample) and the training "
        "activation memory of a batch, computed on the meta device (nothing is allocated).",
    )
    p.add_argument("preset", metavar="PRESET", help="network preset, e.g. unet-cifar or dit-s/2")
    p.add_argument("--size", type=int, default=None, help="input side (default: the preset's)")
    p.add_argument("--channels", type=int, default=None, help="input channels (preset's)")
    p.add_argument("--batch", type=int, default=64, help="batch for the memory estimate")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import json

    from diffuse import nets
    from diffuse.nets.flops import network_info

    for name in ("size", "channels", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name} must be >= 1, got {value}")
    info = network_info(
        nets.get_config(args.preset),
        size=args.size,
        channels=args.channels,
        batch=args.batch,
        name=args.preset,
    )
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    gib = 2.0**30
    print(f"{info.name}: input {info.channels}x{info.size}x{info.size}")
    print(f"  parameters           {info.params:>14,d}")
    print(
        f"  GFLOPs / forward     {info.gflops:>14.3f}  (one sample; x{info.batch}: "
        f"{info.gflops * info.batch:.1f})"
    )
    act = info.activation_bytes / gib
    print(f"  activations (train)  {act:>14.3f} GiB  (batch {info.batch}, fp32)")
    print(f"  weights+grads+AdamW  {info.train_state_bytes / gib:>14.3f} GiB")
    return 0


SUBCOMMANDS.append(_add_info)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `diffuse` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"diffuse {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
