"""`diffuse generate "PROMPT"`: text to image with the bundled or a trained model."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from diffuse.cli.arguments import (
    add_seeds_option,
    check_outputs,
    print_warning,
    progress_bar,
    seed_list,
    warning_lines,
)
from diffuse.codecs.controls import control_map
from diffuse.fitted_solvers import FITTED
from diffuse.model_folder import read_info
from diffuse.pipelines.control import control_record, controlled, load_controlnet
from diffuse.pipelines.image_to_image import image_hash, read_image
from diffuse.pipelines.sample import save_grid
from diffuse.pipelines.text_to_image import (
    TextToImagePipeline,
    default_model_dir,
    load_pipeline,
    to_pil,
)
from diffuse.pngmeta import read_params, save_png
from diffuse.shapes import vocabulary


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse generate "PROMPT"`: text to image with the bundled or a trained model."""
    p = sub.add_parser(
        "generate",
        help="generate images from a text prompt",
        description="Generate images from a prompt with the bundled default model (or --model).\n"
        "Every PNG carries its generation parameters; --from-png FILE reproduces it exactly.",
        epilog=vocabulary.describe(captions=_bundled_captions()),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the epilog's lines
    )
    p.add_argument("prompt", nargs="?", help='the prompt ("" for an unconditional image)')
    p.add_argument("-n", type=int, default=None, help="number of images (default 1)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampler steps (model default: 25); a solver fitted for this count by "
        "`diffuse fit-solver` runs unless --sampler or --schedule is given",
    )
    p.add_argument("--sampler", default=None, help="sampler name (default dpmpp_2m)")
    p.add_argument("--schedule", default=None, help="noise schedule (default karras)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (model default)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="first seed (then seed+1, ...)")
    add_seeds_option(seeds)
    p.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="model folder or diffusers folder (default: bundled)",
    )
    p.add_argument("--size", type=int, default=None, help="image side (the model's own)")
    p.add_argument("-o", "--output", default="out.png", help="output PNG (default out.png)")
    p.add_argument("--grid", action="store_true", help="one grid PNG instead of one per image")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--from-png", metavar="FILE", help="reproduce the image stored in FILE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--controlnet", metavar="DIR", help="a ControlNet folder built for the model")
    p.add_argument(
        "--control", metavar="IMAGE", help="picture the ControlNet's map is computed from"
    )
    p.add_argument("--control-scale", type=float, default=1.0, help="0 = the base model")
    p.add_argument("--control-start", type=float, default=1.0, help="strength it starts at")
    p.add_argument("--control-end", type=float, default=0.0, help="strength it stops at")
    p.set_defaults(func=run)


def _bundled_captions() -> str:
    """The kind of Shapes captions the bundled model was trained on (its recipe says)."""
    kind = vocabulary.caption_kind(read_info(default_model_dir()).recipe)
    return kind or "templates"


def output_paths(output: str, seeds: tuple[int, ...], grid: bool) -> list[Path]:
    """Where the images go: `output` itself for one image or a grid, else STEM-SEED.png each.

    Args:
        output: the -o value, a .png path.
        seeds: the seeds, one image each.
        grid: one grid image instead of one file per seed.
    Returns:
        the paths to write, in seed order.
    """
    path = Path(output)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {output!r}")
    if grid or len(seeds) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{seed}{path.suffix}") for seed in seeds]


def _request(args: argparse.Namespace) -> dict:
    """The generation request from the command line, or from --from-png (flags given still
    override nothing there: the PNG's parameters are reproduced as they are)."""
    if args.from_png:
        stored = read_params(args.from_png)
        try:
            seeds = stored["seeds"] if "seeds" in stored else [stored["seed"]]
            request = {
                "prompt": stored["prompt"],
                "negative_prompt": stored["negative_prompt"],
                "seeds": [int(s) for s in seeds],
                "sampler": stored["sampler"],
                "schedule": stored["schedule"],
                "steps": int(stored["steps"]),
                "guidance": float(stored["guidance"]),
                "size": int(stored["size"]),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{args.from_png}: incomplete generation parameters ({err})") from None
        if stored.get("controlnet"):
            args.controlnet = args.controlnet or stored["controlnet"]
            args.control = args.control or stored["control"]
            args.control_scale = float(stored["control_scale"])
            args.control_start = float(stored["control_start"])
            args.control_end = float(stored["control_end"])
        return request | {
            "solver": stored.get("solver"),
            "grid": bool(stored.get("grid", False)),
            "nrow": stored.get("nrow"),
            "model_hash": stored.get("model_hash"),
            "control_hash": stored.get("control_hash"),
        }
    if args.prompt is None:
        raise ValueError('give a PROMPT (use "" for an unconditional image) or --from-png FILE')
    seeds = seed_list(args.seeds, args.n, args.seed)
    return {
        "prompt": args.prompt,
        "negative_prompt": args.negative,
        "seeds": seeds,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "steps": args.steps,
        "guidance": args.guidance,
        "size": args.size,
        "solver": None,
        "grid": args.grid,
        "nrow": args.nrow,
        "model_hash": None,
        "control_hash": None,
    }


def warn_unknown_words(pipe: TextToImagePipeline, prompts: list[str]) -> None:
    """One warning line naming the prompt words a Shapes-caption model never saw (other
    models: nothing is known about their vocabulary, so nothing is said).

    Args:
        pipe: the loaded pipeline (its model info records the training recipe).
        prompts: the prompt and the negative prompt.
    """
    kind = vocabulary.caption_kind(pipe.model.info.recipe)
    if kind is None:
        return
    unknown = vocabulary.unknown_words(" ".join(prompts), kind)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        names = ", ".join(repr(w) for w in unknown)
        print_warning(
            "generate", f"the model never saw the word{plural} {names}; {vocabulary.summary()}"
        )


def run(args: argparse.Namespace) -> int:
    """`diffuse generate`: prompt -> PNG(s) carrying their generation parameters."""
    with warning_lines("generate"):  # the library's warnings (e.g. a truncated prompt)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    request = _request(args)
    grid, nrow, wanted_hash = request.pop("grid"), request.pop("nrow"), request.pop("model_hash")
    wanted_control = request.pop("control_hash")
    if bool(args.controlnet) != bool(args.control):
        raise ValueError("--controlnet DIR and --control IMAGE go together")
    repeated = sorted({s for s in request["seeds"] if request["seeds"].count(s) > 1})
    if repeated:
        raise ValueError(f"seeds must not repeat, got {repeated} more than once")
    if nrow is not None and nrow < 1:
        raise ValueError(f"--nrow must be >= 1, got {nrow}")
    paths = output_paths(args.output, tuple(request["seeds"]), grid)
    check_outputs(paths, args.overwrite)  # before any work, so nothing is half written
    pipe = load_pipeline(args.model, device=args.device)
    if wanted_hash and wanted_hash != pipe.model_hash:
        raise ValueError(
            f"{args.from_png} was made by a model with weights hash {wanted_hash}, but "
            f"{pipe.name!r} has {pipe.model_hash}; pass that model with --model"
        )
    params = pipe.params(**request)
    warn_unknown_words(pipe, [params.prompt, params.negative_prompt])
    if params.sampler == FITTED:
        print(
            f"diffuse generate: sampling with the solver fitted for {params.steps} steps "
            f"({params.solver})",
            file=sys.stderr,
        )
    control_meta: dict = {}
    with contextlib.ExitStack() as stack:
        extra = None
        if args.controlnet:
            controlnet = load_controlnet(args.controlnet, pipe.model)
            _, pixels = read_image(args.control, pipe.size, 3)
            control_meta = control_record(
                args.controlnet,
                args.control,
                controlnet.config.kind,
                image_hash(pixels),
                args.control_scale,
                args.control_start,
                args.control_end,
            )
            if wanted_control and wanted_control != control_meta["control_hash"]:
                raise ValueError(
                    f"{args.from_png} was made from another control image (hash {wanted_control})"
                )
            use = stack.enter_context(
                controlled(
                    pipe.model,
                    controlnet,
                    args.control_scale,
                    args.control_start,
                    args.control_end,
                )
            )
            extra = use(control_map(controlnet.config.kind, pixels))
        with progress_bar(params.steps, "generate", not args.no_progress) as callback:
            images = pipe.generate(params, callback=callback, extra_cond=extra)
    if grid:
        nrow = nrow or max(1, round(len(params.seeds) ** 0.5))
        meta = (
            params.for_seed(params.seeds[0])
            | control_meta
            | {
                "seeds": list(params.seeds),
                "grid": True,
                "nrow": nrow,
            }
        )
        meta.pop("seed")
        written = [save_grid(images, paths[0], nrow, meta, overwrite=args.overwrite)]
    else:
        written = [
            save_png(picture, path, params.for_seed(seed) | control_meta, overwrite=args.overwrite)
            for picture, path, seed in zip(to_pil(images), paths, params.seeds)
        ]
    for path in written:
        print(path)
    return 0
