"""Fitted solvers stored in a model folder: bespoke coefficients for several step counts.

`diffuse fit-solver` fits, for a model and a number of network calls N, a schedule and the
coefficients of a bespoke solver (`samplers.bespoke`) against the model's own many-step
solution, with its default guidance. The results live next to the weights in SOLVERS_FILE
(`model_folder.SOLVERS_FILE`), one entry per N:

    {"format": 1, "weights_sha256": "...", "solvers": {"6": {"guidance": 2.0, "levels": [...],
     "a": [...], "b": [[...], ...], "base": "unipc", "order": 2, "validation_mse": ...,
     "baseline": "dpmpp_2m", "baseline_mse": ..., "fit_seconds": ...}}}

The file records the sha256 of the weights it was fitted to: a file copied next to another
model's weights is refused, as is an unknown version or a damaged file (one line naming it).

    solvers = read_solvers("runs/x/model")   # {} when the folder has none
    solver = solvers.get(6)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffuse.io import ModelFileError, atomic_write_text, file_sha256
from diffuse.model_folder import SOLVERS_FILE, WEIGHTS_FILE, resolve_model_folder
from diffuse.samplers.bespoke import BespokeCoefficients

__all__ = [
    "FITTED",
    "FORMAT",
    "FittedSolver",
    "choose_solver",
    "read_solvers",
    "save_solver",
]

logger = logging.getLogger(__name__)

FORMAT = 1  # the SOLVERS_FILE version written and read
FITTED = "fitted"  # the sampler (and schedule) name recorded for a fitted solver


@dataclass(frozen=True)
class FittedSolver:
    """A bespoke solver fitted to one model for one number of network calls.

    Attributes:
        coefficients: the levels (steps + 1, ending in 0) and coefficients.
        guidance: the classifier-free guidance scale the solver was fitted with.
        base, order: the classical sampler the fit started from.
        validation_mse: the solver's mean squared error to the reference on held-out noises.
        baseline, baseline_mse: the best plain sampler at the same number of calls and its
            error on the same held-out noises.
        fit_seconds: wall time of the fit.
    """

    coefficients: BespokeCoefficients
    guidance: float
    base: str
    order: int
    validation_mse: float
    baseline: str
    baseline_mse: float
    fit_seconds: float

    @property
    def steps(self) -> int:
        """Network calls (steps) of the solver."""
        return len(self.coefficients.a)

    @property
    def digest(self) -> str:
        """12 hex digits identifying the coefficients and guidance (recorded in PNG metadata)."""
        text = json.dumps(self.coefficients.to_dict() | {"guidance": self.guidance}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one entry of the file's "solvers")."""
        return {
            "guidance": self.guidance,
            **self.coefficients.to_dict(),
            "base": self.base,
            "order": self.order,
            "validation_mse": self.validation_mse,
            "baseline": self.baseline,
            "baseline_mse": self.baseline_mse,
            "fit_seconds": self.fit_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedSolver:
        """Inverse of `to_dict` (KeyError, TypeError or ValueError on a bad entry)."""
        coefficients = BespokeCoefficients.from_dict(data)
        levels = coefficients.levels
        if levels[-1] != 0.0 or any(u <= v for u, v in zip(levels, levels[1:])):
            raise ValueError(f"levels must decrease to 0, got {list(levels)}")
        values = [*levels, *coefficients.a, *(v for row in coefficients.b for v in row)]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("non-finite coefficients")
        guidance = float(data["guidance"])
        if not math.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
        return cls(
            coefficients=coefficients,
            guidance=guidance,
            base=str(data["base"]),
            order=int(data["order"]),
            validation_mse=float(data["validation_mse"]),
            baseline=str(data["baseline"]),
            baseline_mse=float(data["baseline_mse"]),
            fit_seconds=float(data["fit_seconds"]),
        )


def _read(path: Path, weights_sha256: str) -> dict[int, FittedSolver]:
    """The solvers in `path`, checked against the weights' sha256 (ModelFileError if not)."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path} is damaged: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} is damaged: expected a JSON object")
    version = data.get("format")
    if version != FORMAT:
        raise ModelFileError(
            f"{path}: unknown format version {version!r} (this diffuse reads version {FORMAT})"
        )
    recorded = data.get("weights_sha256")
    if recorded != weights_sha256:
        raise ModelFileError(
            f"{path} was fitted to another model (weights sha256 {str(recorded)[:12]}, this "
            f"model's is {weights_sha256[:12]}); delete it or fit again with `diffuse fit-solver`"
        )
    try:
        solvers = {int(n): FittedSolver.from_dict(e) for n, e in data["solvers"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path} is damaged: bad solver entry ({err!r})") from None
    for n, solver in solvers.items():
        if solver.steps != n:
            raise ModelFileError(f"{path} is damaged: the entry for {n} steps has {solver.steps}")
    return solvers


def read_solvers(folder: str | os.PathLike) -> dict[int, FittedSolver]:
    """The fitted solvers of a model folder by number of steps ({} when it has none).

    Args:
        folder: a model folder or training run folder.
    Returns:
        steps -> solver.
    Raises:
        ModelFileError: a damaged file, an unknown version, or a file fitted to other weights
            (a ValueError naming the file).
    """
    folder = resolve_model_folder(folder)
    path = folder / SOLVERS_FILE
    if not path.is_file():
        return {}
    return _read(path, file_sha256(folder / WEIGHTS_FILE))


def save_solver(folder: str | os.PathLike, solver: FittedSolver) -> Path:
    """Add (or replace) the solver for `solver.steps` in the folder's solver file, atomically.

    Other step counts already stored are kept; a damaged or foreign file is an error (nothing
    is overwritten).

    Args:
        folder: a model folder or training run folder.
        solver: the fitted solver.
    Returns:
        the path of the solver file.
    """
    folder = resolve_model_folder(folder)
    path = folder / SOLVERS_FILE
    sha = file_sha256(folder / WEIGHTS_FILE)
    solvers = _read(path, sha) if path.is_file() else {}
    solvers[solver.steps] = solver
    data = {
        "format": FORMAT,
        "weights_sha256": sha,
        "solvers": {str(n): solvers[n].to_dict() for n in sorted(solvers)},
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def choose_solver(
    solvers: dict[int, FittedSolver],
    steps: int,
    *,
    sampler: str | None,
    schedule: str | None,
    guidance: float,
    fallback: str,
    steps_given: bool = True,
    digest: str | None = None,
) -> FittedSolver | None:
    """The fitted solver a request runs with, or None for a plain sampler.

    A request that names no sampler and no schedule gets the fitted solver for its step count
    when there is one fitted with its guidance; a named sampler overrides it. The name FITTED
    asks for the fitted solver explicitly (as a PNG's stored parameters do). When the folder
    has fits but none for this request, a warning says which sampler runs instead.

    Args:
        solvers: the folder's solvers (`read_solvers`).
        steps: the requested steps.
        sampler, schedule: the requested names (None: not given).
        guidance: the requested guidance scale.
        fallback: the sampler used when no solver applies (for the warning).
        steps_given: whether the caller chose `steps` (no warning for the model's default).
        digest: the `FittedSolver.digest` the request expects (from a PNG), if any.
    Returns:
        the solver, or None.
    Raises:
        ValueError: FITTED asked for but no solver for `steps`, or not the expected one.
    """
    fitted = ", ".join(map(str, sorted(solvers))) or "none"
    if sampler == FITTED:
        if steps not in solvers:
            raise ValueError(f"no fitted solver for {steps} steps in this model (fitted: {fitted})")
        if digest and solvers[steps].digest != digest:
            raise ValueError(
                f"the fitted solver for {steps} steps is {solvers[steps].digest}, not the "
                f"{digest} the request was made with; it was fitted again since"
            )
        return solvers[steps]
    if sampler is not None or schedule is not None or not solvers:
        return None
    solver = solvers.get(steps)
    if solver is not None and math.isclose(solver.guidance, guidance):
        return solver
    if steps_given:
        why = (
            f"no fitted solver for {steps} steps (fitted: {fitted})"
            if solver is None
            else f"the solver for {steps} steps was fitted with guidance {solver.guidance:g}, "
            f"not {guidance:g}"
        )
        logger.warning("%s; sampling with %s", why, fallback)
    return None
