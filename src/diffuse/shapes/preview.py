"""Sample Shapes renders with their captions: `python -m diffuse.shapes.preview DIR`.

Produces DIR/samples.png (a 4x4 grid, 64 px renders upscaled 2x) and DIR/README.md listing the
caption and a paraphrase of every tile in reading order.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, paraphrase, sample_split_scene

logger = logging.getLogger(__name__)


def sample_grid(
    rows: int = 4, cols: int = 4, size: int = 64, scale: int = 2, seed: int = 0, gap: int = 4
) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """A grid image of training items 0..rows*cols-1 and (caption, paraphrase, scene) per tile.

    Returns:
        (uint8 [H, W, 3] grid, per tile (caption, paraphrase, canonical description)).
    """
    tile = size * scale
    grid = np.full(
        (rows * tile + (rows + 1) * gap, cols * tile + (cols + 1) * gap, 3), 255, np.uint8
    )
    texts = []
    for i in range(rows * cols):
        scene = sample_split_scene(seed, i, "train")
        image = render_scene(scene, size).repeat(scale, 0).repeat(scale, 1)  # nearest upscale
        r, c = divmod(i, cols)
        top, left = gap + r * (tile + gap), gap + c * (tile + gap)
        grid[top : top + tile, left : left + tile] = image
        texts.append((caption(scene, seed, i), paraphrase(scene, seed, i), scene.describe()))
    return grid, texts


def main(argv: Sequence[str] | None = None) -> int:
    """Write samples.png and README.md into the given folder."""

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    grid, texts = sample_grid(size=args.size, seed=args.seed)
    Image.fromarray(grid).save(args.out / "samples.png", optimize=True)
    lines = [
        "# Shapes samples",
        "",
        "Procedural text-to-image data (`diffuse.shapes`): one to three objects on a dark tint or"
        " gradient, each with a shape (circle, square, triangle, star), one of eight colours (red,"
        " orange, yellow, green, cyan, blue, purple, white), a size (small, large) and its own"
        " cell of a 3x3 grid. Captions name every object's colour and shape and state only true"
        " facts (positions, relations, sizes, count). Object pairs listed in"
        " `scenes.HELDOUT_PAIRS` never appear together in training (the held-out split);"
        " paraphrases use a vocabulary disjoint from the training captions.",
        "",
        "    from diffuse.shapes import ShapesDataset, evaluate",
        "    image, caption, scene = ShapesDataset(size=32)[0]  # [3, 32, 32] in [-1, 1]",
        "    report = evaluate(images, prompts)  # fraction of prompts fully satisfied + breakdown",
        "",
        "Evaluator check on ground-truth renders (expect 1.0 everywhere, ~0 when mismatched):",
        "",
        "    python -m diffuse.shapes.validate --size 32 64 --n 1000",
        "    python -m diffuse.shapes.validate --size 32 64 --n 1000 --mismatched",
        "",
        f"`samples.png`: training items 0-15 (seed {args.seed}) rendered at {args.size} px,"
        " shown 2x, read left to right, top to bottom. Regenerate with"
        f" `python -m diffuse.shapes.preview docs/shapes --size {args.size}`.",
        "",
        "![samples](samples.png)",
        "",
        "| # | caption (training templates) | paraphrase (held-out vocabulary) | scene |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i} | {c} | {p} | {d} |" for i, (c, p, d) in enumerate(texts)]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    logger.info("wrote %s and %s", args.out / "samples.png", args.out / "README.md")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
