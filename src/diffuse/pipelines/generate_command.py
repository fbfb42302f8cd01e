"""The work behind `diffuse generate` (parsing lives in diffuse.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["output_paths", "run_generate"]


def output_paths(output: str, seeds: tuple[int, ...], grid: bool) -> list[Path]:
    """Where the images go: `output` itself for one image or a grid, else STEM-SEED.png each."""
    path = Path(output)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {output!r}")
    if grid or len(seeds) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{seed}{path.suffix}") for seed in seeds]


def _request(args: argparse.Namespace) -> dict:
    """The generation request from the command line, or from --from-png (flags given still
    override nothing there: the PNG's parameters are reproduced as they are)."""
    from diffuse.pngmeta import read_params

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
        return request | {
            "grid": bool(stored.get("grid", False)),
            "nrow": stored.get("nrow"),
            "model_hash": stored.get("model_hash"),
        }
    if args.prompt is None:
        raise ValueError('give a PROMPT (use "" for an unconditional image) or --from-png FILE')
    if args.seeds is not None:
        from diffuse.training.commands import parse_seeds

        try:
            seeds = parse_seeds([args.seeds])
        except ValueError as err:
            raise ValueError(f"--seeds {args.seeds!r}: {err}") from None
        if args.n is not None and args.n != len(seeds):
            raise ValueError(f"-n {args.n} does not match the {len(seeds)} --seeds")
    else:
        n = 1 if args.n is None else args.n
        if n < 1:
            raise ValueError(f"-n must be >= 1, got {n}")
        seeds = [args.seed + i for i in range(n)]
    return {
        "prompt": args.prompt,
        "negative_prompt": args.negative,
        "seeds": seeds,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "steps": args.steps,
        "guidance": args.guidance,
        "size": args.size,
        "grid": args.grid,
        "nrow": args.nrow,
        "model_hash": None,
    }


def run_generate(args: argparse.Namespace) -> int:
    """`diffuse generate`: prompt -> PNG(s) carrying their generation parameters."""
    from diffuse.pipelines.sample import save_grid
    from diffuse.pipelines.text_to_image import load_pipeline, to_pil
    from diffuse.pngmeta import save_png

    request = _request(args)
    grid, nrow, wanted_hash = request.pop("grid"), request.pop("nrow"), request.pop("model_hash")
    repeated = sorted({s for s in request["seeds"] if request["seeds"].count(s) > 1})
    if repeated:
        raise ValueError(f"seeds must not repeat, got {repeated} more than once")
    if nrow is not None and nrow < 1:
        raise ValueError(f"--nrow must be >= 1, got {nrow}")
    paths = output_paths(args.output, tuple(request["seeds"]), grid)
    if not args.overwrite:  # refuse before any work, so nothing is half written
        taken = [str(p) for p in paths if p.exists()]
        if taken:
            raise FileExistsError(f"{', '.join(taken)} exists; pass --overwrite to replace it")
    pipe = load_pipeline(args.model, device=args.device)
    if wanted_hash and wanted_hash != pipe.model_hash:
        raise ValueError(
            f"{args.from_png} was made by a model with weights hash {wanted_hash}, but "
            f"{pipe.name!r} has {pipe.model_hash}; pass that model with --model"
        )
    params = pipe.params(**request)
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=params.steps, unit="step", desc="generate", file=sys.stderr)
    callback = (lambda info: bar.update(1)) if bar is not None else None  # noqa: E731
    try:
        images = pipe.generate(params, callback=callback)
    finally:
        if bar is not None:
            bar.close()
    if grid:
        nrow = nrow or max(1, round(len(params.seeds) ** 0.5))
        meta = params.for_seed(params.seeds[0]) | {
            "seeds": list(params.seeds),
            "grid": True,
            "nrow": nrow,
        }
        meta.pop("seed")
        written = [save_grid(images, paths[0], nrow, meta, overwrite=args.overwrite)]
    else:
        written = [
            save_png(picture, path, params.for_seed(seed), overwrite=args.overwrite)
            for picture, path, seed in zip(to_pil(images), paths, params.seeds)
        ]
    for path in written:
        print(path)
    return 0
