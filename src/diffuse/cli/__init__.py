"""The `diffuse` command line: one module per command, each with `register(sub)` and `run(args)`.

A command module parses and prints; the work is done by library code, so Python users get the
same behaviour. The library never imports this package.

Imports are at module top, in every command module too. Measured before choosing (2-core CPU,
median of 5, CPU seconds of `python -m diffuse ...`): `--help` 2.50 s with the commands'
library imports deferred into their functions, 2.77 s with them at top; `info unet-s` 5.07 s vs
5.20 s. Deferring saves little because torch (2.29 s alone) is imported on every path anyway:
the `generate` help lists the Shapes vocabulary (diffuse.shapes imports torch) and `eval` offers
the dataset names of diffuse.metrics.
"""

from __future__ import annotations

import argparse
import sys

from diffuse import __version__
from diffuse.cli import (
    convert,
    data,
    edit,
    fit_solver,
    generate,
    info,
    inpaint,
    sample,
    serve,
    text,
    train,
    video,
)
from diffuse.cli import eval as eval_command
from diffuse.cli.arguments import CliError

__all__ = ["CliError", "build_parser", "main"]

# In the order they appear in `diffuse --help`.
COMMANDS = (
    eval_command,
    train,
    sample,
    generate,
    video,
    edit,
    inpaint,
    fit_solver,
    info,
    data,
    text,
    serve,
    convert,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every command registered."""
    parser = argparse.ArgumentParser(prog="diffuse", description="Diffusion models toolkit.")
    parser.add_argument("--version", action="version", version=f"diffuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `diffuse` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"diffuse {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C while a command loads or samples (a training loop reports its own step and
        # resume command): one line and the shell's status for SIGINT, no traceback. Outputs
        # are written atomically, so nothing half-written is left.
        print(f"diffuse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
