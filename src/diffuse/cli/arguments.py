"""What every command shares: the user-facing error type, seeds, output checks, the progress bar
and one-line warnings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from diffuse.io import bar_size_options

__all__ = [
    "SEEDS_HELP",
    "CliError",
    "add_seeds_option",
    "check_outputs",
    "parse_seeds",
    "print_warning",
    "progress_bar",
    "warning_lines",
]

SEEDS_HELP = "seeds: integers and ranges separated by commas, e.g. 1,5,9 or 0-15 or 0-3,7"


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def add_seeds_option(parser: argparse._ActionsContainer, *, several_words: bool = False) -> None:
    """Add `--seeds` with the one seed syntax of every command (see `parse_seeds`).

    Args:
        parser: the command's parser (or a mutually exclusive group of it).
        several_words: also take space-separated words (`--seeds 0 1 2`); only for a command
            without positional arguments, which the words would swallow.
    """
    parser.add_argument(
        "--seeds",
        nargs="+" if several_words else None,
        metavar="S,S-S,...",
        help=f"{SEEDS_HELP} (default: 0 .. n-1)",
    )


def parse_seeds(items: str | Sequence[str] | None) -> list[int] | None:
    """Seeds from the `--seeds` syntax: '1,5,9', '0-15', '0-3,7' (or several such words).

    Args:
        items: the option's value: one string, a list of words, or None (not given).
    Returns:
        the seeds in the order given, or None when `items` is None.
    Raises:
        CliError: a part that is not an integer or an increasing range (named), a negative
            seed, or no seed at all.
    """
    if items is None:
        return None
    words = [items] if isinstance(items, str) else list(items)
    given = " ".join(words)
    seeds: list[int] = []
    for word in words:
        for part in word.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:  # a range; a leading '-' is a sign, refused below
                    lo, hi = part.split("-", 1)
                    first, last = int(lo), int(hi)
                    if last < first:
                        raise ValueError
                    seeds.extend(range(first, last + 1))
                else:
                    seeds.append(int(part))
            except ValueError:
                raise CliError(
                    f"--seeds {given!r}: bad seed {part!r}; use integers and ranges like "
                    "1,5,9 or 0-15"
                ) from None
    if not seeds:
        raise CliError(f"--seeds {given!r}: no seed given")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise CliError(f"--seeds {given!r}: seeds must be >= 0, got {negative}")
    return seeds


def seed_list(seeds: str | None, n: int | None, first: int = 0) -> list[int]:
    """The seeds a command runs: `--seeds` when given (then `-n`, if given, must count them),
    else `-n` seeds (default 1) counting up from `first` (`--seed`).

    Raises:
        CliError: a bad `--seeds`, `-n` below 1 or disagreeing with `--seeds`.
    """
    listed = parse_seeds(seeds)
    if listed is not None:
        if n is not None and n != len(listed):
            raise CliError(f"-n {n} does not match the {len(listed)} --seeds")
        return listed
    count = 1 if n is None else n
    if count < 1:
        raise CliError(f"-n must be >= 1, got {count}")
    return [first + i for i in range(count)]


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse, before any work, output files that exist (unless `overwrite`) or cannot be
    written: a folder the user may not write in, or a file where a folder should be. A missing
    folder is fine when it can be created (the writers create it).

    Args:
        paths: every file the command will write.
        overwrite: whether existing files may be replaced.
    Raises:
        CliError: naming the path and what is wrong with it.
    """
    if not overwrite:
        taken = [str(p) for p in paths if p.exists()]
        if taken:
            raise CliError(f"{', '.join(taken)} exists; pass --overwrite to replace it")
    for folder in sorted({p.parent for p in paths}):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # the nearest folder that exists: the rest is created
        if not existing.is_dir():
            raise CliError(f"cannot write in {folder}: {existing} is a file, not a folder")
        # A real probe, not os.access: it also sees read-only mounts and answers for root.
        try:
            fd, probe = tempfile.mkstemp(dir=existing, prefix=".diffuse-write-test-")
        except OSError as err:
            raise CliError(
                f"cannot write in {folder}: {existing} is not writable ({err.strerror})"
            ) from None
        os.close(fd)
        os.unlink(probe)


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool) -> Iterator[Callable[[object], None]]:
    """A sampler callback that advances a step bar on the terminal, closed on exit.

    Args:
        total: sampler steps per batch times batches.
        desc: the bar's label (the command name).
        enabled: False for --no-progress; the bar is also off when stderr is not a terminal.
    Yields:
        the callback (a no-op when there is no bar).
    """
    if not (enabled and sys.stderr.isatty()):
        yield lambda info: None
        return
    bar = tqdm(total=total, unit="step", desc=desc, file=sys.stderr, **bar_size_options(sys.stderr))
    try:
        yield lambda info: bar.update(1)  # returns True; samplers ignore non-tensor returns
    finally:
        bar.close()


@contextmanager
def warning_lines(command: str) -> Iterator[None]:
    """Show the library's logged warnings as one line each on stderr,
    `diffuse COMMAND: warning: MESSAGE`, while the block runs.

    Args:
        command: the command's name, e.g. "generate".
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"diffuse {command}: warning: %(message)s"))
    library = logging.getLogger("diffuse")
    library.addHandler(handler)
    try:
        yield
    finally:
        library.removeHandler(handler)


def print_warning(command: str, message: str) -> None:
    """Print one warning line, `diffuse COMMAND: warning: MESSAGE`, on stderr.

    Args:
        command: the command's name.
        message: the warning (one line).
    """
    print(f"diffuse {command}: warning: {message}", file=sys.stderr)
