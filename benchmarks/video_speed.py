"""Speed of text-to-video: a 16-frame 64x64 clip at 25 steps, cold and steady, against one
image of the image model the video model was inflated from.

1. Cold: `diffuse video PROMPT --frames 16 --steps 25 -o FILE` as a fresh process (Python
   start-up, imports, loading the model and the text encoder, sampling, the clip, its contact
   sheet and sidecar written), wall time.
2. Steady state, in one process: `pipe.generate` of one 16-frame clip and, alternating with it
   in the same loop, one image from the bundled text-to-image model (`load_pipeline()`), both
   with 25 dpmpp_2m steps and classifier-free guidance; the median of each after a warm-up call,
   and their ratio (the acceptance bar: a clip within 20x one image).

    python benchmarks/video_speed.py --model models/moving-shapes-t2v --json video-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.pipelines.video import load_video_pipeline

PROMPT = "a red circle moving to the right"
IMAGE_PROMPT = "a red circle"
RATIO_LIMIT = 20.0


def cold_start(model: str, frames: int, steps: int) -> float:
    """Wall seconds of `diffuse video` in a new process."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "diffuse", "video", PROMPT, "--no-progress"]
        cmd += ["--frames", str(frames), "--steps", str(steps), "--model", model]
        cmd += ["-o", str(Path(tmp) / "cold.webp")]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0


def steady_state(model: str, frames: int, steps: int, repeats: int) -> dict:
    """Median seconds of one clip and of one image, measured alternately in one process."""
    video = load_video_pipeline(model)
    image = load_pipeline()
    clip_params = video.params(PROMPT, frames=frames, seeds=[0], steps=steps)
    image_params = image.params(IMAGE_PROMPT, seeds=[0], steps=steps)
    clip_times, image_times = [], []
    for r in range(repeats + 1):  # the first round warms both up and is dropped
        t0 = time.perf_counter()
        video.generate(clip_params)
        t1 = time.perf_counter()
        image.generate(image_params)
        t2 = time.perf_counter()
        if r:
            clip_times.append(t1 - t0)
            image_times.append(t2 - t1)
    clip, one = statistics.median(clip_times), statistics.median(image_times)
    return {
        "clip_s": clip,
        "image_s": one,
        "ratio": clip / one,
        "clip_times_s": clip_times,
        "image_times_s": image_times,
        "settings": clip_params.for_seed(0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="video model folder")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cold = cold_start(args.model, args.frames, args.steps)
    steady = steady_state(args.model, args.frames, args.steps, args.repeats)
    result = {
        "model": args.model,
        "frames": args.frames,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cold_s": cold,
        **steady,
        "ratio_limit": RATIO_LIMIT,
        "ratio_ok": steady["ratio"] <= RATIO_LIMIT,
    }
    print(json.dumps(result, indent=2))
    print()
    print("| measurement | seconds |")
    print("|---|---|")
    print(f"| cold `diffuse video` ({args.frames} frames, {args.steps} steps) | {cold:.1f} |")
    print(
        f"| steady clip ({args.frames} frames, median of {args.repeats}) | {steady['clip_s']:.2f} |"
    )
    print(f"| steady image (median of {args.repeats}) | {steady['image_s']:.2f} |")
    print(f"| clip / image | {steady['ratio']:.1f}x (bar {RATIO_LIMIT:.0f}x) |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
