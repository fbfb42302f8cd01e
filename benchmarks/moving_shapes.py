"""Moving Shapes: the clip evaluator on ground-truth clips, wrong pairs, reversed and shuffled
clips, and the speed of sampling, rendering and evaluating clips.

For every split (train, heldout), frame count and resolution, N clips are drawn
(`diffuse.shapes.motion`, seed --seed), rendered, and scored by the clip evaluator
(`diffuse.shapes.video_evaluator`) against:

- their own captions and paraphrases (expect ~100%);
- the caption of the next clip (mismatched pairs; expect ~0%);
- (with --noise / --blur, the frames degraded first, as `python -m diffuse.shapes.validate`
  does for images)
- their own captions, played backwards (reversed: a mover that never bounces must fail its
  direction) and with the frames shuffled (no constant-velocity motion).

Speed, measured side by side in the same run: milliseconds to sample a clip scene, to render a
16-frame 64x64 clip with `render_clip`, to render the same frames one by one with the image
renderer (the baseline), and one 64x64 image; and evaluator milliseconds per clip.

    python benchmarks/moving_shapes.py --json docs/moving-shapes.json       # n = 200
    python benchmarks/moving_shapes.py -n 50 --frames 8 --resolution 32     # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from diffuse.shapes.clip_captions import clip_caption, clip_paraphrase
from diffuse.shapes.motion import frame_times, render_clip, sample_clip_scene, sample_clip_scenes
from diffuse.shapes.render import render_scene
from diffuse.shapes.validate import _degrade
from diffuse.shapes.video_evaluator import (
    REPORTED_RATES,
    detect_clip_objects,
    score_clip_detections,
)


def _speed(n: int, seed: int, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per clip (per clip the fastest of `rounds` passes, then the median over
    clips): sample a clip scene; render it at 16 x 64 x 64 (`render_clip`, every object's
    coverage for all frames at once); render the same 16 frames one image at a time
    (`render_scene` per frame, the baseline); render one 64 px image."""
    start_all = time.perf_counter()
    clips = []
    sample = []
    for i in range(n):
        start = time.perf_counter()
        clips.append(sample_clip_scene(seed, i))
        sample.append(time.perf_counter() - start)
    frame_scenes = [[clip.at(t) for t in frame_times(16)] for clip in clips]
    runs: dict[str, list[list[float]]] = {"clip": [], "frames": [], "image": []}
    for _ in range(rounds):
        for name in runs:
            times = []
            for clip, scenes in zip(clips, frame_scenes):
                start = time.perf_counter()
                if name == "clip":
                    render_clip(clip, 16, 64)
                elif name == "frames":
                    for scene in scenes:
                        render_scene(scene, 64)
                else:
                    render_scene(scenes[0], 64)
                times.append(time.perf_counter() - start)
            runs[name].append(times)
    best = {name: np.min(np.array(r), axis=0) for name, r in runs.items()}  # [n] per clip
    out = {
        "sample_clip_ms": 1e3 * statistics.median(sample),
        "render_clip_16x64_ms": 1e3 * float(np.median(best["clip"])),
        "render_frames_16x64_ms": 1e3 * float(np.median(best["frames"])),
        "render_image_64_ms": 1e3 * float(np.median(best["image"])),
    }
    out["clip_over_frames"] = out["render_clip_16x64_ms"] / out["render_frames_16x64_ms"]
    out["clip_over_image"] = out["render_clip_16x64_ms"] / out["render_image_64_ms"]
    out["seconds"] = time.perf_counter() - start_all
    return {k: round(v, 3) for k, v in out.items()}


def _rates(report) -> dict[str, float]:
    return {"score": report.score, **report.breakdown}


def main(argv: list[str] | None = None) -> int:
    """Score the clip evaluator on ground truth and on wrong clips; print JSON and a table."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("-n", type=int, default=200, help="clips per split (default 200)")
    ap.add_argument("--splits", nargs="+", default=["train", "heldout"])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--resolution", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--seed", type=int, default=7, help="clip stream (training uses 0)")
    ap.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (of 255)")
    ap.add_argument("--blur", type=int, default=0, help="3x3 binomial blur passes per frame")
    ap.add_argument("--skip-speed", action="store_true", help="only the evaluator rows")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)

    out: dict = {
        "n": args.n,
        "seed": args.seed,
        "machine": platform.processor() or platform.machine(),
        "noise": args.noise,
        "blur": args.blur,
        "speed": None if args.skip_speed else _speed(args.n, args.seed),
        "rows": [],
    }
    rng = np.random.default_rng(args.seed)
    for split in args.splits:
        clips = sample_clip_scenes(args.n, args.seed, split)
        captions = [clip_caption(c, args.seed, i) for i, c in enumerate(clips)]
        paraphrases = [clip_paraphrase(c, args.seed, i) for i, c in enumerate(clips)]
        unbounced = [
            any(o.direction != "still" and o.first_bounce() >= 1 for o in c.objects) for c in clips
        ]
        for frames in args.frames:
            for resolution in args.resolution:
                video = np.stack(
                    [
                        _degrade(render_clip(c, frames, resolution), args.blur, args.noise, i)
                        for i, c in enumerate(clips)
                    ]
                )
                start = time.perf_counter()
                detections = detect_clip_objects(video)
                truth = score_clip_detections(detections, captions)
                evaluate_ms = 1e3 * (time.perf_counter() - start) / args.n
                backwards = detect_clip_objects(video[:, ::-1].copy())
                reversed_report = score_clip_detections(backwards, captions)
                order = np.stack([rng.permutation(frames) for _ in clips])
                shuffled = np.stack([clip[o] for clip, o in zip(video, order)])
                shuffled_report = score_clip_detections(detect_clip_objects(shuffled), captions)
                failed = [
                    not r.checks["direction"]
                    for r, u in zip(reversed_report.results, unbounced)
                    if u
                ]
                row = {
                    "split": split,
                    "frames": frames,
                    "resolution": resolution,
                    "captions": _rates(truth),
                    "paraphrases": _rates(score_clip_detections(detections, paraphrases)),
                    "mismatched": _rates(
                        score_clip_detections(detections, captions[1:] + captions[:1])
                    ),
                    "mismatched_paraphrases": _rates(
                        score_clip_detections(detections, paraphrases[1:] + paraphrases[:1])
                    ),
                    "reversed": _rates(reversed_report),
                    "reversed_unbounced_clips": len(failed),
                    "reversed_unbounced_direction_failed": float(np.mean(failed)),
                    "shuffled": _rates(shuffled_report),
                    "evaluate_ms_per_clip": round(evaluate_ms, 2),
                }
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")

    speed = out["speed"]
    if speed:
        print(f"\nspeed (ms, median over {args.n} clips of the fastest of 3 passes):")
        print("| sample a clip | render_clip 16x64x64 | 16 x render_scene | one 64 px image |")
        print("|---|---|---|---|")
        print(
            f"| {speed['sample_clip_ms']:.2f} | {speed['render_clip_16x64_ms']:.2f}"
            f" | {speed['render_frames_16x64_ms']:.2f} (clip / frames ="
            f" {speed['clip_over_frames']:.2f}) | {speed['render_image_64_ms']:.2f} (clip / image ="
            f" {speed['clip_over_image']:.1f}) |"
        )
    print(
        "| split | T | px | captions | paraphrases | mismatched | reversed | reversed, unbounced:"
        " direction failed | shuffled | eval ms/clip |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        print(
            f"| {r['split']} | {r['frames']} | {r['resolution']}"
            f" | {100 * r['captions']['score']:.1f}% | {100 * r['paraphrases']['score']:.1f}%"
            f" | {100 * r['mismatched']['score']:.1f}% | {100 * r['reversed']['score']:.1f}%"
            f" | {100 * r['reversed_unbounced_direction_failed']:.1f}%"
            f" of {r['reversed_unbounced_clips']} | {100 * r['shuffled']['score']:.1f}%"
            f" | {r['evaluate_ms_per_clip']:.0f} |"
        )
    print("\nper attribute, ground truth (captions) and mismatched pairs:")
    print("| split | T | px | " + " | ".join(REPORTED_RATES) + " |")
    print("|---|---|---|" + "---|" * len(REPORTED_RATES))
    for r in out["rows"]:
        for kind in ("captions", "mismatched"):
            cells = " | ".join(f"{100 * r[kind][a]:.0f}%" for a in REPORTED_RATES)
            print(f"| {r['split']} {kind} | {r['frames']} | {r['resolution']} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
