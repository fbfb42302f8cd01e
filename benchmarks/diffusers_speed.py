"""diffuse vs diffusers on the same imported Stable-Diffusion-shaped model, in one run.

A small SD-1.x-shaped pipeline (U-Net with cross-attention at three of four levels, CLIP text
encoder, KL autoencoder with factor 8; random weights, built with diffusers and saved with
`save_pretrained` into a temporary folder) is run by diffusers' StableDiffusionPipeline with
DDIM and by diffuse's text-to-image pipeline loaded from the same folder (converted on the
fly), with the same steps, guidance and image size. Each repeat times one whole call of each
(prompt encoding, sampling with classifier-free guidance, decoding) of `--images` images
(default 2: on a CPU diffuse runs whole samples per thread for batch-independent results, so a
single image would be padded to two), alternating the two so that load on the machine hits
both alike; the ratio of the medians is reported, of wall time and of the process's CPU time
(the latter less disturbed by other jobs on a shared machine).

    python benchmarks/diffusers_speed.py --json diffusers_speed.json
    python benchmarks/diffusers_speed.py --steps 20 --size 256 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.interop.conftest

PROMPT = "a red cat"


def build_folder(folder: Path, size: int, context_dim: int = 64) -> Path:
    """A small SD-shaped StableDiffusionPipeline folder with random weights."""
    import diffusers
    from tests.interop.conftest import tiny_text_encoder, tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    unet = diffusers.UNet2DConditionModel(
        sample_size=size // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(64, 128, 256, 256),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=context_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=size,
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=tiny_text_encoder(len(tokenizer), context_dim),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="image side (latents: size/8)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=2, help="images per call")
    parser.add_argument("--context-dim", type=int, default=64, help="CLIP width (SD: 768)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import diffusers

    from diffuse.pipelines.text_to_image import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DIFFUSE_CACHE", str(Path(tmp) / "cache"))
        folder = build_folder(Path(tmp) / "sd", args.size, args.context_dim)
        theirs = diffusers.StableDiffusionPipeline.from_pretrained(folder)
        theirs.set_progress_bar_config(disable=True)
        ours = load_pipeline(folder)
        params = sum(p.numel() for p in ours.model.denoiser.net.parameters())

        def run_diffusers() -> None:
            theirs(
                PROMPT,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                height=args.size,
                width=args.size,
                output_type="pt",
                num_images_per_prompt=args.images,
                generator=torch.Generator().manual_seed(0),
            )

        def run_diffuse() -> None:
            ours(
                PROMPT,
                steps=args.steps,
                guidance=args.guidance,
                sampler="ddim",
                schedule="leading",
                seeds=list(range(args.images)),
                output_type="pt",
            )

        times: dict[str, list[float]] = {"diffusers": [], "diffuse": []}
        cpu: dict[str, list[float]] = {"diffusers": [], "diffuse": []}
        with torch.inference_mode():
            run_diffusers(), run_diffuse()  # warm-up: first-call allocations, caches
            for _ in range(args.repeats):
                for name, fn in (("diffusers", run_diffusers), ("diffuse", run_diffuse)):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    fn()
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)

    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    result = {
        "benchmark": "diffusers_speed",
        "unet_parameters": params,
        "image_size": args.size,
        "context_dim": args.context_dim,
        "images_per_call": args.images,
        "steps": args.steps,
        "guidance": args.guidance,
        "sampler": "DDIM (diffusers) / ddim, leading (diffuse)",
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "platform": platform.platform(),
        "seconds": times,
        "median_seconds": median,
        "ratio_diffuse_over_diffusers": median["diffuse"] / median["diffusers"],
        # CPU time of this process: less disturbed than wall time by other jobs on the machine
        "cpu_seconds": cpu,
        "median_cpu_seconds": median_cpu,
        "cpu_ratio_diffuse_over_diffusers": median_cpu["diffuse"] / median_cpu["diffusers"],
    }
    print(json.dumps(result, indent=2))
    head = f"median s / call ({args.images} images, {args.steps} steps, {args.size}px, CFG)"
    print(f"\n| pipeline  | {head} |")
    print(f"|-----------|{'-' * (len(head) + 2)}|")
    for name in ("diffusers", "diffuse"):
        print(f"| {name:<9} | {median[name]:>{len(head)}.3f} |")
    print(
        f"\ndiffuse / diffusers = {result['ratio_diffuse_over_diffusers']:.3f} (wall), "
        f"{result['cpu_ratio_diffuse_over_diffusers']:.3f} (CPU time)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
