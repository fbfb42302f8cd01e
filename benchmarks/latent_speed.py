"""Sampling time per image: latent text-to-image at 64x64 against a pixel-space 64x64 model of
equal parameters, side by side in one process.

    python benchmarks/latent_speed.py --codec runs/shapes-vae/model --json latent-speed.json

Both networks come from the latent recipe's [model] section (configs/shapes-t2i-latent.toml):
one built for the codec's latents (4 x 16 x 16), one for 3 x 64 x 64 pixels; they differ only
in their first and last convolutions. Speed does not depend on the weights, so both are freshly
initialised; the codec is the given VAE (its decode is counted for the latent model). Each
measurement: 4 images, 25 dpmpp_2m steps with classifier-free guidance on a fixed caption-sized
conditioning, timed `--repeats` times after a warm-up, alternating the two models; medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from diffuse.codecs.vae import load_vae
from diffuse.config import load_recipe
from diffuse.denoiser import Denoiser
from diffuse.pipelines.sample import generate
from diffuse.training.model import build_network, build_process, count_parameters

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "shapes-t2i-latent.toml"
TARGET_RATIO = 1 / 3
CONTEXT_TOKENS, CONTEXT_DIM = 12, 384  # a MiniLM encoding of a one-object caption


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", required=True, help="VAE folder (vae.json, vae.safetensors)")
    ap.add_argument("--recipe", default=str(RECIPE))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_recipe(args.recipe)
    codec = load_vae(args.codec)
    size = cfg.data.image_size
    latent = codec.latent_shape(size)
    process = build_process(cfg.process)
    models = {}
    for name, shape in (("latent", latent), ("pixel", (3, size, size))):
        torch.manual_seed(0)
        net, _ = build_network(
            cfg.model,
            in_channels=shape[0],
            image_size=shape[-1],
            num_classes=0,
            context_dim=CONTEXT_DIM,
            pooled_dim=CONTEXT_DIM,
        )
        params = count_parameters(net)
        denoiser = Denoiser(
            net.eval().requires_grad_(False),
            process,
            cfg.process.parametrization,
            sigma_data=cfg.process.sigma_data,
        )
        models[name] = (denoiser, shape, params)
    g = torch.Generator().manual_seed(0)
    cond = {
        "context": torch.randn(1, CONTEXT_TOKENS, CONTEXT_DIM, generator=g),
        "context_mask": torch.ones(1, CONTEXT_TOKENS, dtype=torch.bool),
        "pooled": torch.randn(1, CONTEXT_DIM, generator=g),
    }
    uncond = {k: v[:, :1] if k != "pooled" else torch.zeros_like(v) for k, v in cond.items()}

    @torch.no_grad()
    def run(name: str) -> float:
        denoiser, shape, _ = models[name]
        t0 = time.perf_counter()
        x = generate(
            denoiser,
            shape,
            [0, 1, 2, 3],
            cond=cond,
            uncond=uncond,
            sampler="dpmpp_2m",
            schedule="karras",
            steps=25,
            guidance=4.0,
        )
        if name == "latent":
            x = codec.decode(x)
        assert x.shape == (4, 3, size, size)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"latent": [], "pixel": []}
    for name in times:
        run(name)  # warm-up
    for _ in range(args.repeats):
        for name in times:
            times[name].append(run(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["latent"] / med["pixel"]
    result = {
        "recipe": args.recipe,
        "codec": args.codec,
        "image_size": size,
        "latent_shape": list(latent),
        "parameters": {k: v[2] for k, v in models.items()},
        "seconds_4_images": times,
        "median_s_per_image": {k: v / 4 for k, v in med.items()},
        "ratio_latent_to_pixel": ratio,
        "target_ratio": TARGET_RATIO,
        "threads": args.threads,
        "command": " ".join(sys.argv),
    }
    print("| model | parameters | s per image (median) | runs (4 images) |")
    print("|---|---|---|---|")
    for name in times:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {models[name][2]:,} | {med[name] / 4:.3f} | {runs} |")
    print(f"ratio latent / pixel: {ratio:.3f} (target <= {TARGET_RATIO:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
