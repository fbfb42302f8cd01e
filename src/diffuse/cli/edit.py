"""`diffuse edit IMAGE "PROMPT"`: img2img (SDEdit) or edit by inversion of an existing image."""

from __future__ import annotations

import argparse
from typing import Any

from diffuse.cli.arguments import (
    add_seeds_option,
    check_outputs,
    progress_bar,
    seed_list,
    warning_lines,
)
from diffuse.cli.generate import output_paths, warn_unknown_words
from diffuse.pipelines.image_to_image import check_strength
from diffuse.pipelines.text_to_image import load_pipeline, to_pil
from diffuse.pngmeta import read_params, save_png
from diffuse.samplers.inversion import INVERSIONS

SIZE_NOTE = (
    "The image must have the model's size (64x64 for the bundled model): images are not "
    "resized, so that what is kept comes back exactly."
)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """The options `edit` and `inpaint` share with `generate` (seeds, sampler, output...)."""
    p.add_argument("-n", type=int, default=None, help="number of images (default 1)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default: 25)")
    p.add_argument("--sampler", default=None, help="sampler name (default dpmpp_2m)")
    p.add_argument("--schedule", default=None, help="noise schedule (default karras)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (model default)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="first seed (then seed+1, ...)")
    add_seeds_option(seeds)
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: bundled)")
    p.add_argument("-o", "--output", default="out.png", help="output PNG (default out.png)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--from-png",
        metavar="FILE",
        help="reproduce the image stored in FILE (IMAGE and MASK default to the stored paths)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse edit IMAGE "PROMPT"`."""
    p = sub.add_parser(
        "edit",
        help="change an image following a prompt (img2img, or by inversion)",
        description="Change IMAGE towards PROMPT. By default img2img (SDEdit): the image is "
        "noised to the level --strength picks and sampled back with PROMPT. With --invert the "
        "image is inverted deterministically with --source (its description) and sampled with "
        f"PROMPT, which keeps what both prompts share. {SIZE_NOTE} Every PNG carries its "
        "parameters; --from-png FILE reproduces it exactly.",
    )
    p.add_argument("image", nargs="?", help="the input image (PNG)")
    p.add_argument("prompt", nargs="?", help="the target prompt")
    p.add_argument(
        "--strength",
        type=float,
        default=0.6,
        help="img2img strength in (0, 1]: 1 redraws everything (default 0.6)",
    )
    p.add_argument("--invert", action="store_true", help="edit by inversion with --source")
    p.add_argument("--source", default=None, metavar="TEXT", help="prompt describing IMAGE")
    p.add_argument(
        "--inversion",
        default="ddim",
        choices=sorted(INVERSIONS),
        help="inversion method; the matching sampler is used (default ddim)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        help="fixed-point iterations per inversion step (exact inversion; ddim only)",
    )
    p.add_argument(
        "--source-guidance",
        type=float,
        default=1.0,
        metavar="SCALE",
        help="guidance of the inversion (default 1: unguided, the exact inverse; --guidance "
        "is the way down's)",
    )
    add_common_options(p)
    p.set_defaults(func=run)


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The generation part of a request from the command line (seeds, sampler...)."""
    if args.prompt is None:
        raise ValueError("give IMAGE and PROMPT, or --from-png FILE")
    seeds = seed_list(args.seeds, args.n, args.seed)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds must not repeat, got {repeated} more than once")
    return {
        "negative_prompt": args.negative,
        "seeds": seeds,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "steps": args.steps,
        "guidance": args.guidance,
    }


def request_from_png(path: str, task: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(prompt, generation request, stored record) from a PNG `diffuse edit/inpaint` wrote."""
    stored = read_params(path)
    if stored.get("task") != task:
        made = stored.get("task") or "generate"
        raise ValueError(f"{path} was made by {made!r}, not by {task!r}; use that command")
    try:
        request = {
            "negative_prompt": stored["negative_prompt"],
            "seeds": [int(stored["seed"])],
            "sampler": stored["sampler"],
            "schedule": stored["schedule"],
            "steps": int(stored["steps"]),
            "guidance": float(stored["guidance"]),
            "size": int(stored["size"]),
        }
        return stored["prompt"], request, stored
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: incomplete edit parameters ({err})") from None


def input_path(given: str | None, stored: dict[str, Any] | None, key: str, what: str) -> str:
    """The input file: the one given, else the one the PNG records."""
    if given is not None:
        return given
    if stored and stored.get(key):
        return str(stored[key])
    raise ValueError(f"give the {what} file")


def run_task(
    args: argparse.Namespace, task: str, image: str, prompt: str, request: dict, extra: dict
) -> int:
    """Check outputs, load the model, make the images and write the PNGs (edit and inpaint).

    Args:
        args: the parsed command line (output, overwrite, model, device, progress).
        task: "img2img", "inversion" or "inpaint".
        image: the input image path.
        prompt: the target prompt.
        request: the generation keywords of `TextToImagePipeline.params`.
        extra: the task's keywords of `edit_params` (strength, mask, source_prompt...).
    Returns:
        0.
    """
    stored_hash = extra.pop("model_hash", None)
    paths = output_paths(args.output, tuple(request["seeds"]), grid=False)
    check_outputs(paths, args.overwrite)  # before any work, so nothing is half written
    pipe = load_pipeline(args.model, device=args.device)
    if stored_hash and stored_hash != pipe.model_hash:
        raise ValueError(
            f"{args.from_png} was made by a model with weights hash {stored_hash}, but "
            f"{pipe.name!r} has {pipe.model_hash}; pass that model with --model"
        )
    wanted = extra.pop("image_hash", None), extra.pop("mask_hash", None)
    params = pipe.edit_params(task, prompt, image, **extra, **request)
    for name, want, have in (
        ("image", wanted[0], params.image_hash),
        ("mask", wanted[1], params.mask_hash),
    ):
        if want and want != have:
            raise ValueError(
                f"{args.from_png} was made from another {name} (pixel hash {want}); the "
                f"{name} given has hash {have}"
            )
    g = params.generation
    warn_unknown_words(pipe, [g.prompt, g.negative_prompt, params.source_prompt])
    with progress_bar(params.steps_total, args.command, not args.no_progress) as callback:
        images = pipe.run_edit(params, image, mask=extra.get("mask"), callback=callback)
    for picture, path, seed in zip(to_pil(images), paths, g.seeds):
        print(save_png(picture, path, params.for_seed(seed), overwrite=args.overwrite))
    return 0


def run(args: argparse.Namespace) -> int:
    """`diffuse edit`: IMAGE + PROMPT -> PNG(s) carrying their parameters."""
    with warning_lines("edit"):
        if args.from_png:
            stored = read_params(args.from_png)
            task = "inversion" if stored.get("task") == "inversion" else "img2img"
            prompt, request, stored = request_from_png(args.from_png, task)
            image = input_path(args.image, stored, "image", "IMAGE")
            extra: dict[str, Any] = {
                "image_hash": stored.get("image_hash"),
                "model_hash": stored.get("model_hash"),
            }
            if task == "img2img":
                extra["strength"] = float(stored["strength"])
            else:
                extra |= {
                    "source_prompt": stored["source_prompt"],
                    "inversion": stored["inversion"],
                    "refine": int(stored["refine"]),
                    # PNGs written before the inversion had its own scale inverted at guidance
                    "source_guidance": float(stored.get("source_guidance", stored["guidance"])),
                }
            return run_task(args, task, image, prompt, request, extra)
        if args.image is None:
            raise ValueError("give IMAGE and PROMPT, or --from-png FILE")
        request = request_from_args(args)
        if args.invert:
            if args.source is None:
                raise ValueError('--invert needs --source "the prompt describing IMAGE"')
            extra = {"source_prompt": args.source, "inversion": args.inversion}
            extra["refine"] = args.refine
            extra["source_guidance"] = args.source_guidance
            if args.sampler is not None:
                raise ValueError("--invert uses the sampler matching --inversion; drop --sampler")
            return run_task(args, "inversion", args.image, args.prompt, request, extra)
        if args.source is not None or args.refine or args.source_guidance != 1.0:
            raise ValueError("--source, --refine and --source-guidance need --invert")
        check_strength(args.strength)
        extra = {"strength": args.strength}
        return run_task(args, "img2img", args.image, args.prompt, request, extra)
