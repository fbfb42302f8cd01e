"""`diffuse eval`: FD, KID and class accuracy of a model's samples (or saved samples)."""

from __future__ import annotations

import argparse
import json
import logging

from diffuse.cli.arguments import CliError
from diffuse.metrics import evaluate as ev


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse eval`: FD, KID and class accuracy in the project's classifier features."""
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
    p.add_argument("--dataset", required=True, choices=list(ev.DATASET_FILES))
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`diffuse eval`: sample (or read) images, score them, print a table or JSON."""
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
