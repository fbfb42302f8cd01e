"""`diffuse convert SRC DST`: diffusers folders to diffuse model folders, and back."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffuse.cli.arguments import CliError, check_outputs
from diffuse.interop import export_diffusers, is_diffusers_folder
from diffuse.model_folder import import_diffusers_folder, load_model

FORMATS = ("diffuse", "diffusers")


def register(sub: argparse._SubParsersAction) -> None:
    """Register `diffuse convert SRC DST [--to diffuse|diffusers]`."""
    p = sub.add_parser(
        "convert",
        help="convert a diffusers folder to a diffuse model folder, or back",
        description="Convert a diffusers pipeline or network folder (model_index.json, unet/, "
        "vae/, text_encoder/, tokenizer/, scheduler/; safetensors weights) into a diffuse model "
        "folder, or a diffuse pixel-space model (a U-Net without text or classes, a "
        "class-conditional DiT) into a diffusers pipeline folder. "
        "Any command's --model also takes a diffusers folder directly (converted once and "
        "cached by the hash of its weights).",
    )
    p.add_argument("source", metavar="SRC", help="diffusers folder or diffuse model folder")
    p.add_argument("dest", metavar="DST", help="the folder to write")
    p.add_argument(
        "--to",
        choices=FORMATS,
        default=None,
        help="target format (default: the other one of SRC's)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`diffuse convert`: write DST in the requested format and say what was written."""
    source, dest = Path(args.source), Path(args.dest)
    if not source.is_dir():
        raise CliError(f"{source} is not a folder")
    from_diffusers = is_diffusers_folder(source)
    target = args.to or ("diffuse" if from_diffusers else "diffusers")
    if target == "diffuse" and not from_diffusers:
        raise CliError(f"{source} is not a diffusers folder (no model_index.json or config.json)")
    if target == "diffusers" and from_diffusers:
        raise CliError(f"{source} is already a diffusers folder")
    check_outputs([dest], args.overwrite)
    if target == "diffuse":
        import_diffusers_folder(source, dest, overwrite=args.overwrite)
    else:
        model = load_model(source)
        if model.info.codec:
            raise CliError(
                f"{source} is a latent model; its codec has no diffusers export (only "
                "pixel-space models are exported)"
            )
        info = model.info
        net = model.denoiser.net
        export_diffusers(net, info.process, info.sampling.schedule, dest, overwrite=args.overwrite)
    print(f"wrote {dest} ({target} format)")
    return 0
