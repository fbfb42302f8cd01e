"""Autoencoder benchmark: reconstruction PSNR on held-out Shapes scenes and decode time.

    python benchmarks/vae.py --model runs/shapes-vae/model --json docs/shapes-vae.json

PSNR (peak = the [-1, 1] range) of encode (posterior mean) -> decode on `-n` scenes of the
held-out split (one to three objects, prompts never in training), at the codec's training
resolution; reconstruction adherence: the prompt evaluator (`diffuse.shapes.evaluator`) run on
the reconstructions against each scene's caption, the fraction fully satisfied (ground-truth
renders score 100%); it bounds what a latent model decoded by this codec can score. Decode
time: the median wall time of decoding 16 latents, `--repeats` times, in this process with
`--threads` torch threads. JSON out, plus a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from diffuse.codecs.vae import load_vae
from diffuse.pipelines.sample import to_uint8
from diffuse.shapes.dataset import ShapesDataset
from diffuse.shapes.evaluator import detect_objects, score_detections
from diffuse.training.vae_loss import psnr, ssim

DECODE_LIMIT_S = 0.2  # the bound for 16 latents on the 2-core CPU
PSNR_TARGET_DB = 32.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="codec folder (vae.json, vae.safetensors)")
    parser.add_argument("-n", type=int, default=1000, help="held-out scenes")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument(
        "--split",
        default="heldout",
        choices=["heldout", "heldout-1", "heldout-2", "heldout-3"],
        help="held-out scenes: one to three objects, or exactly 1, 2 or 3",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed decodes of 16 latents")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument(
        "--cifar10", action="store_true", help="the CIFAR-10 held-out images instead of scenes"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vae = load_vae(args.model)
    if args.cifar10:
        from diffuse.metrics.evaluate import load_split

        held = load_split("cifar10").heldout_images[: args.n]  # never in training (holdout)
        images = torch.from_numpy(held).permute(0, 3, 1, 2)
        args.resolution, args.n = images.shape[-1], len(images)
    else:
        scenes = ShapesDataset(args.resolution, split=args.split, length=args.n, seed=7)
        images = torch.stack(
            [torch.from_numpy(scenes.image_uint8(i)).permute(2, 0, 1) for i in range(args.n)]
        )
    images = images.float() / 127.5 - 1
    t0 = time.perf_counter()
    with torch.no_grad():
        recon = torch.cat([vae.decode(vae.encode(chunk)) for chunk in images.split(64)])
    encode_decode_s = time.perf_counter() - t0
    saved = to_uint8(recon)  # [N, H, W, C], as saved to PNG
    recon_u8 = torch.from_numpy(saved).permute(0, 3, 1, 2).float() / 127.5 - 1
    adherence = None
    if not args.cifar10:
        captions = [scenes.caption(i) for i in range(args.n)]
        report = score_detections(detect_objects(saved), captions)
        adherence = {"score": report.score, **report.breakdown}
    scores = psnr(recon_u8, images)
    structural = ssim(recon_u8, images)
    latents = vae.encode(images[:16]).detach()
    times = []
    with torch.no_grad():
        vae.decode(latents)  # warm-up
        for _ in range(args.repeats):
            t = time.perf_counter()
            vae.decode(latents)
            times.append(time.perf_counter() - t)
    result = {
        "model": args.model,
        "data": "cifar10 held-out" if args.cifar10 else f"shapes {args.split} scenes",
        "images": args.n,
        "resolution": args.resolution,
        "latent_shape": list(vae.latent_shape(args.resolution)),
        "psnr_db_mean": float(scores.mean()),
        "psnr_db_median": float(scores.median()),
        "psnr_db_p05": float(scores.quantile(0.05)),
        "ssim_mean": float(structural.mean()),
        "reconstruction_adherence": adherence,
        "decode16_s_median": statistics.median(times),
        "decode16_s_all": times,
        "encode_decode_all_s": encode_decode_s,
        "threads": args.threads,
        "command": " ".join(sys.argv),
    }
    r = result
    rows = [
        ("measurement", "value", "target"),
        ("---", "---", "---"),
        (
            f"PSNR, {args.n} held-out images, mean",
            f"{r['psnr_db_mean']:.2f} dB",
            "-" if args.cifar10 else f">= {PSNR_TARGET_DB} dB",  # CIFAR-10: reported only
        ),
        (
            "PSNR median / 5th percentile",
            f"{r['psnr_db_median']:.2f} / {r['psnr_db_p05']:.2f} dB",
            "-",
        ),
        ("SSIM mean", f"{r['ssim_mean']:.4f}", "-"),
    ]
    if adherence is not None:
        parts = ", ".join(f"{k} {v:.1%}" for k, v in adherence.items() if k != "score")
        rows.append(
            (
                "captions satisfied by the reconstructions",
                f"{adherence['score']:.1%} ({parts})",
                "-",
            )
        )
    rows += [
        (
            f"decode 16 latents, median of {args.repeats}",
            f"{r['decode16_s_median']:.3f} s",
            f"<= {DECODE_LIMIT_S} s",
        ),
    ]
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
