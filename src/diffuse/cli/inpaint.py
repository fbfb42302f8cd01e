"""`diffuse inpaint IMAGE --mask MASK "PROMPT"`: fill a masked region of an image."""

from __future__ import annotations

import argparse
from typing import Any

from diffuse.cli.arguments import warning_lines
from diffuse.cli.edit import (
    SIZE_NOTE,
    add_common_options,
    input_path,
    request_from_args,
    request_from_png,
    run_task,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse inpaint IMAGE --mask MASK "PROMPT"`."""
    p = sub.add_parser(
        "inpaint",
        help="fill the white region of a mask in an image following a prompt",
        description="Fill the region of IMAGE that MASK marks white (black: keep) following "
        "PROMPT, with any model (training-free: the kept region is imposed after every "
        "sampler step). The decoded result is pasted into IMAGE, so pixels outside the mask "
        "come back exactly (with --feather R: exactly beyond R pixels from the mask). The mask "
        f"must be binary (0 and 255 only) and the image's size. {SIZE_NOTE}",
    )
    p.add_argument("image", nargs="?", help="the input image (PNG)")
    p.add_argument("prompt", nargs="?", help="the prompt for the whole picture")
    p.add_argument("--mask", default=None, metavar="MASK", help="binary mask PNG: white = fill")
    p.add_argument(
        "--resample",
        type=int,
        default=1,
        help="RePaint resampling: times each step is taken (default 1: none)",
    )
    p.add_argument(
        "--feather", type=int, default=0, help="seam width in pixels (default 0: exact paste)"
    )
    add_common_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`diffuse inpaint`: IMAGE + MASK + PROMPT -> PNG(s) carrying their parameters."""
    with warning_lines("inpaint"):
        if args.from_png:
            prompt, request, stored = request_from_png(args.from_png, "inpaint")
            image = input_path(args.image, stored, "image", "IMAGE")
            extra: dict[str, Any] = {
                "mask": input_path(args.mask, stored, "mask", "--mask"),
                "resample": int(stored["resample"]),
                "feather": int(stored["feather"]),
                "image_hash": stored.get("image_hash"),
                "mask_hash": stored.get("mask_hash"),
                "model_hash": stored.get("model_hash"),
            }
            return run_task(args, "inpaint", image, prompt, request, extra)
        if args.image is None:
            raise ValueError("give IMAGE, --mask MASK and PROMPT, or --from-png FILE")
        if args.mask is None:
            raise ValueError("give --mask MASK (a binary PNG: white = fill, black = keep)")
        request = request_from_args(args)
        extra = {"mask": args.mask, "resample": args.resample, "feather": args.feather}
        return run_task(args, "inpaint", args.image, args.prompt, request, extra)
