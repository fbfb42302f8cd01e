"""`diffuse video "PROMPT"`: text-to-video (and image-to-video with --image) with a video model."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffuse.cli.arguments import (
    CliError,
    add_seeds_option,
    check_outputs,
    progress_bar,
    seed_list,
    warning_lines,
)
from diffuse.pipelines.video import (
    VideoParams,
    clip_frames_uint8,
    default_video_model_dir,
    load_video_pipeline,
)
from diffuse.video_files import CLIP_FORMATS, sidecar_path, write_clip

# Animated outputs (a .png is the contact sheet written beside them).
CLIP_SUFFIXES = tuple(s for s, kind in CLIP_FORMATS.items() if kind != "contact-sheet")


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse video "PROMPT"`: a clip from a prompt (and a start image)."""
    p = sub.add_parser(
        "video",
        help="generate a video clip from a text prompt (and a start image)",
        description="Generate a clip with a video model (default: the shipped Moving Shapes "
        "model, models/moving-shapes-t2v). Writes the clip (.webp or .gif; .mp4 with the "
        "`video` extra), a PNG contact sheet STEM-sheet.png, and beside each a sidecar JSON "
        "(FILE.json) with the parameters, which are also inside the files. A prompt without "
        "motion gives a still clip.",
    )
    p.add_argument("prompt", help='the prompt, e.g. "a red circle moving to the right"')
    p.add_argument("--frames", type=int, default=None, help="clip length (model's maximum)")
    p.add_argument("--image", metavar="PNG", help="start image (image-to-video), frame size")
    p.add_argument("-o", "--output", default="clip.webp", help="output clip (default clip.webp)")
    p.add_argument("-n", type=int, default=None, help="number of clips (default 1)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="first seed (then seed+1, ...)")
    add_seeds_option(seeds)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default: 25)")
    p.add_argument("--sampler", default=None, help="sampler name (default dpmpp_2m)")
    p.add_argument("--schedule", default=None, help="noise schedule (default karras)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (model default)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    p.add_argument("--fps", type=float, default=8.0, help="playback frames per second")
    p.add_argument("--model", default=None, metavar="DIR", help="video model folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def output_files(output: str, seeds: list[int]) -> list[tuple[Path, Path]]:
    """(clip, contact sheet) per seed: `output` itself for one clip, else STEM-SEED.EXT each;
    the sheet is STEM-sheet.png beside it (each file gets its sidecar FILE.json).

    Raises:
        CliError: an output format that cannot be written.
    """
    path = Path(output)
    if path.suffix.lower() not in CLIP_SUFFIXES:
        raise CliError(
            f"output must end in {', '.join(CLIP_SUFFIXES)} (animated clip), got {output!r}"
        )
    clips = [path] if len(seeds) == 1 else [
        path.with_name(f"{path.stem}-{seed}{path.suffix}") for seed in seeds
    ]  # fmt: skip
    return [(clip, clip.with_name(f"{clip.stem}-sheet.png")) for clip in clips]


def run(args: argparse.Namespace) -> int:
    """`diffuse video`: prompt (and start image) -> clip, contact sheet and sidecar JSON."""
    with warning_lines("video"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    seeds = seed_list(args.seeds, args.n, args.seed)
    if args.frames is not None and args.frames < 1:
        raise CliError(f"--frames must be >= 1, got {args.frames}")
    if not args.fps > 0:
        raise CliError(f"--fps must be > 0, got {args.fps}")
    files = output_files(args.output, seeds)
    written = [p for pair in files for path in pair for p in (path, sidecar_path(path))]
    check_outputs(written, args.overwrite)
    folder = Path(args.model) if args.model else default_video_model_dir()
    pipe = load_video_pipeline(folder, device=args.device)
    image = pipe.read_start_image(args.image) if args.image else None
    params = pipe.params(
        args.prompt,
        args.negative,
        frames=args.frames,
        seeds=seeds,
        sampler=args.sampler,
        schedule=args.schedule,
        steps=args.steps,
        guidance=args.guidance,
        image=image,
    )
    with progress_bar(params.steps * len(seeds), "video", not args.no_progress) as callback:
        clips = pipe.generate(params, image=image, callback=callback)
    for (clip_path, sheet), seed, clip in zip(files, params.seeds, clips):
        meta = _metadata(params, seed, args)
        frames = clip_frames_uint8(clip)
        for path in (clip_path, sheet):
            for out in write_clip(path, frames, meta, fps=args.fps, overwrite=args.overwrite):
                print(out)
    return 0


def _metadata(params: VideoParams, seed: int, args: argparse.Namespace) -> dict:
    """What is stored with a clip: its generation parameters, the start image and the fps."""
    meta = params.for_seed(seed) | {"fps": args.fps}
    if args.image:
        meta["image"] = str(args.image)
    return meta
