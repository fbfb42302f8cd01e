"""The `diffuse` command line: one module per command, each with `register(sub)` and `run(args)`.

A command module parses and prints; the work is done by library code, so Python users get the
same behaviour. The library never imports this package.
"""

from __future__ import annotations

import argparse
import sys

from diffuse import __version__
from diffuse.cli import data, generate, info, sample, train
from diffuse.cli import eval as eval_command
from diffuse.cli.arguments import CliError

__all__ = ["CliError", "build_parser", "main"]

# In the order they appear in `diffuse --help`.
COMMANDS = (eval_command, train, sample, generate, info, data)


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


if __name__ == "__main__":
    raise SystemExit(main())
