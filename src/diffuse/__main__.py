"""Allow `python -m diffuse ...` (and `torchrun -m diffuse ...`)."""

from diffuse.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
