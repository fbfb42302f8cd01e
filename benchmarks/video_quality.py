"""Prompt adherence of a text-to-video model on never-seen Moving Shapes prompts, against the
frame-by-frame baseline, and image-to-video: first frame kept and motion as prompted.

Prompts: the captions of the held-out split (`MovingShapesDataset(split="heldout")`: every clip
has a (colour shape, direction) combination no training clip has), `--count` of them from
stream `--stream`. Each clip is scored by the Moving Shapes video evaluator
(`diffuse.shapes.video_evaluator.evaluate_clips`): full satisfaction, per-attribute rates
(direction, speed, per-frame shape/colour/size/position/count, identity, flicker).

- video: the model's clip for prompt i with seed i.
- frame-by-frame baseline: the image model the video model was inflated from (the bundled
  `shapes-t2i`), sampled for every frame with the clip's seed i and the same sampler, steps and
  guidance. The image model is deterministic given its seed, so every frame is the same image:
  it is computed once per prompt and repeated over the frames.
- inflated (optional, `--inflated-count`): the video network with its temporal layers,
  frame embedding and first-frame input at zero, i.e. the image network applied to every frame
  of the clip's noise (`nets.inflate`): what the video model was before training.
- image-to-video (`--i2v-count`): the start image is frame 0 of the held-out clip as rendered
  (a picture the user brings); the prompt is its caption. Reported: PSNR of the decoded frame 0
  to the start image, and the evaluator's rates (direction above all).

Writes the JSON after every batch, so a run stopped by `--max-minutes` still reports what it
measured (with its n).

    python benchmarks/video_quality.py --model models/moving-shapes-t2v --count 200 \\
        --steps 8 --i2v-count 50 --json video-quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from diffuse.nets.inflate import inflate, video_config
from diffuse.nets.unet import UNet
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.pipelines.video import VideoPipeline, load_video_pipeline
from diffuse.shapes.clip_dataset import MovingShapesDataset
from diffuse.shapes.video_evaluator import evaluate_clips

OBJECT_CHECKS = ("shape", "colour", "size", "count")


def score(clips: torch.Tensor, prompts: list[str]) -> tuple[dict[str, Any], Any]:
    """The evaluator's summary plus the rate of clips whose objects are right in every frame."""
    report = evaluate_clips(clips, prompts)
    every_frame = sum(
        all(r.checks.get(a, True) for a in OBJECT_CHECKS) for r in report.results
    ) / max(report.n, 1)
    return report.summary() | {"objects_every_frame": every_frame}, report


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """n-weighted mean of batch summaries."""
    n = sum(p["n"] for p in parts)
    if not n:
        return {"n": 0}
    out: dict[str, Any] = {"n": n}
    out["score"] = sum(p["score"] * p["n"] for p in parts) / n
    out["objects_every_frame"] = sum(p["objects_every_frame"] * p["n"] for p in parts) / n
    keys = parts[0]["breakdown"].keys()
    out["breakdown"] = {k: sum(p["breakdown"][k] * p["n"] for p in parts) / n for k in keys}
    return out


def inflated_pipeline(video: VideoPipeline) -> VideoPipeline:
    """The video model's own network before training: the image network inflated."""
    image = load_pipeline()  # the bundled image model the recipe inflates
    net_cfg = video.base.model.denoiser.net.config
    fields = {k: getattr(net_cfg, k) for k in ("max_frames", "temporal_kernel", "first_frame")}
    net = UNet(video_config(image.model.denoiser.net.config, **fields)).eval()
    inflate(image.model.denoiser.net.state_dict(), image.model.denoiser.net.config, net)
    image.model.denoiser.net = net.requires_grad_(False)
    return VideoPipeline(image)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a.clamp(-1, 1) - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="video model folder")
    parser.add_argument("--count", type=int, default=200, help="text-to-video prompts")
    parser.add_argument("--i2v-count", type=int, default=50, help="image-to-video prompts")
    parser.add_argument("--inflated-count", type=int, default=0, help="inflated-at-init clips")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--guidance", type=float, default=None, help="model default")
    parser.add_argument("--stream", type=int, default=1, help="seed of the held-out stream")
    parser.add_argument(
        "--max-objects", type=int, default=3, help="objects per prompt, at most (1 to 3)"
    )
    parser.add_argument(
        "--first", type=int, default=0, help="first prompt index (split a run over processes)"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="combine the JSON files of such parts, n-weighted",
    )
    parser.add_argument("--batch", type=int, default=4, help="clips per sampler call")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop after (0: none)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    if args.merge:
        merge_files(args.merge, args.json)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    out_of_time = lambda: args.max_minutes and time.monotonic() - start > 60 * args.max_minutes  # noqa: E731
    video = load_video_pipeline(args.model)
    image = load_pipeline()
    total = args.first + max(args.count, args.i2v_count, args.inflated_count)
    data = MovingShapesDataset(
        total,
        args.frames,
        video.size,
        split="heldout",
        seed=args.stream,
        max_objects=args.max_objects,
    )
    prompts = [data.caption(i) for i in range(total)]
    result: dict[str, Any] = {
        "model": args.model,
        "frames": args.frames,
        "steps": args.steps,
        "sampler": args.sampler,
        "stream": args.stream,
        "first": args.first,
        "max_objects": args.max_objects,
        "threads": torch.get_num_threads(),
        "prompts": "held-out split captions",
    }
    parts: dict[str, list] = {"video": [], "baseline": [], "inflated": [], "i2v": []}
    psnrs: list[float] = []
    motions: dict[str, list] = {"video": [], "baseline": [], "i2v": []}

    def save() -> None:
        result.update({name: merge(p) for name, p in parts.items()})
        result["i2v_first_frame_psnr_db"] = {
            "mean": sum(psnrs) / len(psnrs) if psnrs else None,
            "min": min(psnrs) if psnrs else None,
            "n": len(psnrs),
        }
        result["minutes"] = (time.monotonic() - start) / 60
        result["examples"] = {k: v[:6] for k, v in motions.items()}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    def params(pipe: VideoPipeline, seeds: list[int], **extra: Any) -> Any:
        return pipe.params(
            prompts[seeds[0]],
            frames=args.frames,
            seeds=seeds,
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            **extra,
        )

    first, end = args.first, args.first + args.count
    for lo in range(first, end, args.batch):
        seeds = list(range(lo, min(end, lo + args.batch)))
        texts = [prompts[i] for i in seeds]
        clips = video.generate(params(video, seeds), prompts=texts)
        summary, verdicts = score(clips, texts)
        parts["video"].append(summary)
        motions["video"] += [r.summary() for r in verdicts.results[:2]]
        # The baseline: the image model with the same seeds, one image per clip, every frame.
        image_params = image.params(
            texts[0], seeds=seeds, sampler=args.sampler, steps=args.steps, guidance=args.guidance
        )
        stills = image.generate(image_params, prompts=texts)  # [B, 3, H, W]
        static = stills[:, :, None].expand(-1, -1, args.frames, -1, -1)
        summary, verdicts = score(static, texts)
        parts["baseline"].append(summary)
        motions["baseline"] += [r.summary() for r in verdicts.results[:2]]
        save()
        if out_of_time():
            break
    for lo in range(first, first + args.i2v_count):
        if out_of_time():
            break
        frames0 = data[lo][0][:, 0][None]  # [1, 3, H, W] the held-out clip's first frame
        start_image = video.read_start_image(
            ((frames0[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        )
        p = params(video, [lo], image=start_image)
        clip = video.generate(p, image=start_image)
        psnrs.append(psnr(clip[0, :, 0], start_image[0]))
        summary, verdicts = score(clip, [prompts[lo]])
        parts["i2v"].append(summary)
        motions["i2v"] += [r.summary() for r in verdicts.results[:1]]
        save()
    if args.inflated_count and not out_of_time():
        inflated = inflated_pipeline(video)
        stop = first + args.inflated_count
        for lo in range(first, stop, args.batch):
            seeds = list(range(lo, min(stop, lo + args.batch)))
            texts = [prompts[i] for i in seeds]
            clips = inflated.generate(params(inflated, seeds), prompts=texts)
            parts["inflated"].append(score(clips, texts)[0])
            save()
            if out_of_time():
                break
    save()
    report(result)


def merge_files(paths: list[str], out: str) -> None:
    """Combine the results of parts run over disjoint prompt ranges into `out`."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    result = {k: v for k, v in parts[0].items() if not isinstance(v, dict)}
    result["parts"] = [{"first": p["first"], "minutes": p["minutes"]} for p in parts]
    for name in ("video", "baseline", "inflated", "i2v"):
        result[name] = merge([p[name] for p in parts if p.get(name, {}).get("n")])
    psnr_parts = [p["i2v_first_frame_psnr_db"] for p in parts if p["i2v_first_frame_psnr_db"]["n"]]
    n = sum(p["n"] for p in psnr_parts)
    result["i2v_first_frame_psnr_db"] = {
        "mean": sum(p["mean"] * p["n"] for p in psnr_parts) / n if n else None,
        "min": min(p["min"] for p in psnr_parts) if n else None,
        "n": n,
    }
    result["examples"] = parts[0].get("examples", {})
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    report(result)


def report(result: dict[str, Any]) -> None:
    """Print the JSON summary and the table."""
    print(json.dumps({k: result[k] for k in ("video", "baseline", "inflated", "i2v")}, indent=2))
    print("| clips | n | full | direction | objects every frame | identity | flicker |")
    print("|---|---|---|---|---|---|---|")
    for name in ("video", "baseline", "inflated", "i2v"):
        r = result[name]
        if not r.get("n"):
            continue
        b = r["breakdown"]
        print(
            f"| {name} | {r['n']} | {r['score']:.1%} | {b.get('direction', float('nan')):.1%} | "
            f"{r['objects_every_frame']:.1%} | {b.get('identity', float('nan')):.1%} | "
            f"{b.get('flicker', float('nan')):.1%} |"
        )
    print(f"i2v first-frame PSNR: {result['i2v_first_frame_psnr_db']}")


if __name__ == "__main__":
    main()
