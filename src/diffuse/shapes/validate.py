"""Validate the Shapes evaluator on ground-truth renders: `python -m diffuse.shapes.validate`.

Renders N scenes of a split at each size, captions them (training templates and paraphrases),
optionally degrades the images (blur, noise) or pairs every image with another image's prompt,
and prints one JSON line per setting: the fraction of prompts fully satisfied, the
per-attribute breakdown and the timings.

    python -m diffuse.shapes.validate --size 32 64 --n 1000            # expect 1.0
    python -m diffuse.shapes.validate --size 32 --n 1000 --blur 1      # robustness
    python -m diffuse.shapes.validate --size 32 --n 1000 --mismatched  # expect ~0
    python -m diffuse.shapes.validate --size 64 --captions grammar heldout-grammar
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence

import numpy as np

from diffuse.shapes.dataset import CAPTIONERS
from diffuse.shapes.evaluator import evaluate
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import sample_split_scene

logger = logging.getLogger(__name__)


def _degrade(images: np.ndarray, blur: int, noise: float, seed: int) -> np.ndarray:
    """uint8 NHWC images after `blur` 3x3 binomial blurs and Gaussian noise of std `noise`."""
    if blur == 0 and noise == 0:
        return images
    out = images.astype(np.float32)
    kernel = np.array([0.25, 0.5, 0.25], np.float32)
    for _ in range(blur):
        for axis in (1, 2):  # separable: rows, then columns, edges replicated
            padded = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(4)], mode="edge")
            n = out.shape[axis]
            out = sum(
                k * np.take(padded, np.arange(i, i + n), axis=axis) for i, k in enumerate(kernel)
            )
    out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the evaluator on ground-truth renders; print a JSON report per setting."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--size", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--split", choices=("train", "heldout"), default="heldout")
    parser.add_argument(
        "--captions",
        choices=tuple(CAPTIONERS),
        nargs="+",
        default=["train", "paraphrase"],
        help="caption kinds (grammar: templates + training grammar; heldout-grammar)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blur", type=int, default=0, help="3x3 binomial blur passes")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (of 255)")
    parser.add_argument(
        "--mismatched",
        action="store_true",
        help="pair image i with the prompt of image i+1 (should score low)",
    )
    args = parser.parse_args(argv)
    scenes = [sample_split_scene(args.seed, i, args.split) for i in range(args.n)]
    for size in args.size:
        start = time.perf_counter()
        images = np.stack([render_scene(s, size) for s in scenes])
        render_s = time.perf_counter() - start
        images = _degrade(images, args.blur, args.noise, args.seed)
        for kind in args.captions:
            prompts = [CAPTIONERS[kind](s, args.seed, i) for i, s in enumerate(scenes)]
            if args.mismatched:
                prompts = prompts[1:] + prompts[:1]
            start = time.perf_counter()
            report = evaluate(images, prompts)
            row = {"size": size, "captions": kind, "split": args.split, "blur": args.blur}
            row.update(noise=args.noise, **report.summary())
            row.update(
                render_s=round(render_s, 3), evaluate_s=round(time.perf_counter() - start, 3)
            )
            print(json.dumps(row))
            for r in report.results:
                if not r.satisfied and not args.mismatched:
                    logger.info("failed: %r -> %s", r.prompt, r.checks)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
