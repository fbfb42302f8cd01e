"""The `diffuse` command line: parse arguments, build objects, call library functions.

Each subcommand lives in a small `_add_<name>` function that registers its parser and sets
`func`; the work itself is done by library code so that Python users get the same behaviour.
"""

from __future__ import annotations

import argparse
import sys

from diffuse import __version__


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="diffuse", description="Diffusion models toolkit.")
    parser.add_argument("--version", action="version", version=f"diffuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# Subcommand registrars, in the order they appear in `diffuse --help`. Later modules append here.
SUBCOMMANDS: list = []


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
