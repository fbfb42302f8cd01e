"""Train the project's MNIST / Fashion-MNIST / CIFAR-10 classifiers and write them as assets.

These networks are the in-domain feature extractors of `diffuse.metrics` (FD, KID) and the judges
of "generated image is classified as the requested class". Each is trained on its dataset's
training part (all but the 5,000 held-out images of `diffuse.metrics.evaluate.heldout_indices`)
and scored on the held-out part after a save / load round trip of the shipped file.

Reproduce the shipped weights (15-30 minutes on 2 CPU cores; use `--threads 1` when other
jobs share the cores, which is then about twice as fast as 2 contended threads):

    python benchmarks/train_classifiers.py --out src/diffuse/assets/classifiers

The exact commands and accuracies of the shipped files are in docs/benchmarks.md (Classifiers)
and in each file's JSON.

Prints a JSON summary and a table of held-out accuracies at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffuse.metrics.classifier import (
    Classifier,
    ClassifierConfig,
    classifier_dir,
    load_classifier,
    save_classifier,
)
from diffuse.metrics.evaluate import HELDOUT_SEED, HELDOUT_SIZE, load_split

log = logging.getLogger("train_classifiers")


@dataclass(frozen=True)
class Recipe:
    """How one classifier is trained."""

    config: ClassifierConfig
    epochs: int
    batch_size: int = 256
    lr: float = 0.1  # peak SGD learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    pad: int = 2  # random-translation augmentation: pad by this much, crop back
    flip: bool = False  # random horizontal flips


RECIPES: dict[str, Recipe] = {
    "mnist": Recipe(ClassifierConfig(1, 28, 32, (32, 64, 128)), epochs=3),
    "fashion-mnist": Recipe(ClassifierConfig(1, 28, 32, (32, 64, 128)), epochs=6, flip=True),
    "cifar10": Recipe(ClassifierConfig(3, 32, 16, (32, 64, 128)), epochs=6, pad=4, flip=True),
}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `pad` pixels (pad with -1 = black, crop) and random flips.

    Args:
        x: (N, C, H, W) batch in [-1, 1].
    """
    n, _, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)  # (N, C, H + 2p, W + 2p)
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
        idx = torch.arange(n)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


@torch.no_grad()
def accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy in fp32, eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        logits, _ = model(x[i : i + batch].contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def train_one(name: str, recipe: Recipe, out: Path, seed: int, command: str) -> dict:
    """Train, save, reload and score one classifier; returns its summary row."""
    t0 = time.perf_counter()
    split = load_split(name)
    config = ClassifierConfig(**{**recipe.config.to_dict(), "classes": split.classes})
    x_tr, y_tr = to_tensor(split.train_images), torch.from_numpy(split.train_labels)
    x_ho, y_ho = to_tensor(split.heldout_images), torch.from_numpy(split.heldout_labels)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Classifier(config).to(memory_format=torch.channels_last)
    # No weight decay on BatchNorm and biases (common practice for small nets).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = len(x_tr) // recipe.batch_size  # drop the last partial batch
    total = steps_per_epoch * recipe.epochs
    warmup = max(1, int(0.15 * total))

    def lr_at(step: int) -> float:
        # One-cycle: linear warm-up over 15% of the steps, then linear decay to zero.
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        return recipe.lr * max(0.0, (total - step) / (total - warmup))

    step = 0
    for epoch in range(recipe.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            xb = augment(x_tr[idx], recipe.pad, recipe.flip, gen)
            xb = xb.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            # bf16 autocast: about 2x faster convolutions on AVX512-BF16 CPUs; fp32 master weights.
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, _ = model(xb)
            loss = F.cross_entropy(
                logits.float(), y_tr[idx], label_smoothing=recipe.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            step += 1
            if step % 50 == 0:
                log.info("%s step %d/%d (%.0f s)", name, step, total, time.perf_counter() - t0)
        acc = accuracy(model, x_ho, y_ho)
        log.info(
            "%s epoch %d/%d loss %.4f held-out acc %.4f (%.0f s)",
            name,
            epoch + 1,
            recipe.epochs,
            loss_sum / steps_per_epoch,
            acc,
            time.perf_counter() - t0,
        )
    train_s = time.perf_counter() - t0

    path = out / f"{name}.safetensors"
    meta = {
        "dataset": name,
        "split": {
            "rule": "numpy.random.default_rng(seed).permutation(N); held-out = last N_heldout",
            "seed": HELDOUT_SEED,
            "heldout": HELDOUT_SIZE,
        },
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "label_smoothing": recipe.label_smoothing,
        "augment": {"pad": recipe.pad, "flip": recipe.flip},
        "seed": seed,
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        "command": command,
    }
    save_classifier(model, path, meta)
    # Score the file as shipped, after a round trip through safetensors + JSON.
    reloaded = load_classifier(path)
    acc = accuracy(reloaded.to(memory_format=torch.channels_last), x_ho, y_ho)
    meta["heldout_accuracy"] = round(acc, 4)
    save_classifier(reloaded, path, meta)
    row = {
        "dataset": name,
        "heldout_accuracy": acc,
        "epochs": recipe.epochs,
        "params": sum(p.numel() for p in model.parameters()),
        "file_bytes": path.stat().st_size,
        "train_seconds": round(train_s, 1),
    }
    log.info("%s done: %s", name, row)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="NAME"
    )
    parser.add_argument("--out", type=Path, default=classifier_dir())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    command = "python benchmarks/train_classifiers.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    rows = []
    for name in args.datasets:
        recipe = RECIPES[name]
        if args.epochs is not None:
            recipe = Recipe(**{**recipe.__dict__, "epochs": args.epochs})
        rows.append(train_one(name, recipe, args.out, args.seed, command.strip()))
    print(json.dumps(rows, indent=2))
    print("| dataset | held-out acc | epochs | params | file | train s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {100 * r['heldout_accuracy']:.2f}% | {r['epochs']} | "
            f"{r['params']:,} | {r['file_bytes'] / 1e6:.2f} MB | {r['train_seconds']:.0f} |"
        )
    return 0 if all(math.isfinite(r["heldout_accuracy"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
