"""What every command shares: the user-facing error type and seed parsing."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def parse_seeds(items: list[str]) -> list[int]:
    """Seeds from '3 5 7', '0-15' or a mix; raises ValueError naming a bad item."""
    seeds: list[int] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1)
                    a, b = int(lo), int(hi)
                    if b < a:
                        raise ValueError
                    seeds.extend(range(a, b + 1))
                else:
                    seeds.append(int(part))
            except ValueError:
                raise ValueError(f"bad seed {part!r}: use integers or ranges like 0-15") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {seeds}")
    return seeds
