"""Sampler accuracy against an exact probability-flow ODE, side by side with diffusers.

Two problems with an exact denoiser (`diffuse.gaussian_mixture`): a fixed 64-dimensional,
10-component mixture (16 principal directions per component plus isotropic noise, image-like)
and the 2-D ring of 8 Gaussians. Both use the Stable-Diffusion noise range (the "scaled_linear"
DDPM process: levels 0.0292 .. 14.6). For every method and NFE in {3, 4, 5, 6, 8, 10, 15, 20, 50}:

- RMSE to the reference end point: the same starting noise x = level_max * eps, solved with
  DOP853 (rtol 1e-10) to level_min and denoised there, which is what every sampler's final jump
  to zero returns; all methods cover the same range level_max .. level_min (diffusers with
  Karras or exponential sigmas; DDIM with its own "trailing" timesteps).
- sliced W2 to exact data samples (and, for scale, between two exact sample sets).
- NFE counted from real denoiser calls.

Methods: every diffuse sampler with every schedule (karras, loglinear, trailing uniform-t,
flow_shift); two fitted procedures that take any denoiser (`fit_schedule`, and `fit_bespoke` on a
fitted schedule), fitted on a separate batch of starting noises; diffusers' schedulers (bench
extra), fed the same noise and the same range, the exact denoiser wrapped as an eps prediction
on their VP x_t scale; k-diffusion's samplers when `k_diffusion` imports (it needs torchvision;
the script says so when it is missing).

    python benchmarks/samplers.py --json samplers.json          # 4-5 minutes, 1 thread
    python benchmarks/samplers.py --quick                        # a smoke run

Prints a markdown table per problem and the best-per-NFE ratios; writes all rows as JSON.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from diffuse.gaussian_mixture import GaussianMixture, sliced_wasserstein
from diffuse.processes import DiscreteVP
from diffuse.samplers import (
    SAMPLERS,
    STOCHASTIC,
    bespoke,
    deis,
    exponential_multistep,
    fit_candidates_stratified,
    flow_shift,
    karras,
    loglinear,
    reference_endpoints,
    uniform_t,
    unipc,
)

logger = logging.getLogger("benchmarks.samplers")

NFES = (3, 4, 5, 6, 8, 10, 15, 20, 50)
FIT_NFES = (3, 4, 5, 6, 8, 10)  # the low-NFE range the fitting is for (it costs ~5 s per NFE)
HEADLINE_NFES = (5, 6, 8, 10)
PROCESS = DiscreteVP("scaled_linear")


@dataclass
class Row:
    """One measurement."""

    problem: str
    library: str
    method: str
    schedule: str
    target_nfe: int
    nfe: int
    rmse: float
    sw2: float


class Counter:
    """Wraps a denoiser and counts its calls."""

    def __init__(self, denoise: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.denoise = denoise
        self.calls = 0

    def __call__(self, x: Tensor, level: Tensor | float) -> Tensor:
        self.calls += 1
        return self.denoise(x, level)


@dataclass
class Problem:
    """A mixture, its evaluation and fitting batches, reference end points and exact samples."""

    name: str
    mixture: GaussianMixture
    x_eval: Tensor
    x_fit: Tensor
    x_pool: Tensor
    ref_eval: Tensor
    ref_fit: Tensor
    exact: Tensor
    sw2_exact: float

    def score(self, out: Tensor) -> tuple[float, float]:
        rmse = float(((out - self.ref_eval) ** 2).mean().sqrt())
        g = torch.Generator().manual_seed(11)
        sw2 = sliced_wasserstein(out, self.exact, projections=64, generator=g)
        return rmse, sw2


def make_problem(
    name: str, mixture: GaussianMixture, n_eval: int, n_fit: int, n_pool: int
) -> Problem:
    """Noises (evaluation seed 0, fitting seed 1, fitting pool seed 3), references and exact
    samples.

    The evaluation references are DOP853 solutions (rtol 1e-10). The fitting references are
    what `fit_solver` computes by default from the denoiser alone (UniPC-3, 256 Karras steps):
    the fitting never uses the oracle's ODE solver.
    """
    lo, hi = PROCESS.level_min, PROCESS.level_max
    d = mixture.dim
    x_eval = hi * torch.randn(
        n_eval, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    x_fit = hi * torch.randn(
        n_fit, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    x_pool = hi * torch.randn(
        n_pool, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    t0 = time.perf_counter()
    ref_eval = mixture.reference_endpoint(x_eval, hi, lo)
    logger.info("%s: DOP853 references in %.1f s", name, time.perf_counter() - t0)
    ref_fit = reference_endpoints(mixture.denoise, x_fit, level_min=lo, level_max=hi)
    g = torch.Generator().manual_seed(2)
    exact, other = mixture.sample(n_eval, g), mixture.sample(n_eval, g)
    sw2 = sliced_wasserstein(
        exact, other, projections=64, generator=torch.Generator().manual_seed(11)
    )
    return Problem(name, mixture, x_eval, x_fit, x_pool, ref_eval, ref_fit, exact, sw2)


def steps_for(method: str, nfe: int) -> int:
    """Steps whose real call count is <= nfe (Heun: 2 calls per step but the last)."""
    return (nfe + 1) // 2 if "heun" in method.lower() else nfe


# ---------------------------------------------------------------------------- diffuse


SCHEDULES = {
    "karras": karras,
    "loglinear": loglinear,
    "trailing": functools.partial(uniform_t, spacing="trailing"),
    "flow_shift": flow_shift,
}


CROSS_SKIP = ("unipc_1", "deis_2")  # registry aliases for other orders, left out to save time


def run_diffuse(problem: Problem, nfes: tuple[int, ...]) -> list[Row]:
    """Every registered sampler (but the two order aliases) with every schedule."""
    rows = []
    for name, sampler in SAMPLERS.items():
        if name in CROSS_SKIP:
            continue
        for sched_name, schedule in SCHEDULES.items():
            for nfe in nfes:
                levels = schedule(PROCESS, steps_for(name, nfe))
                counter = Counter(problem.mixture.denoise)
                g = torch.Generator().manual_seed(5)

                def noise(x: Tensor, g: torch.Generator = g) -> Tensor:
                    return torch.randn(x.shape, generator=g, dtype=x.dtype)

                out = sampler(counter, problem.x_eval, levels, noise=noise)
                rows.append(
                    Row(
                        problem.name,
                        "diffuse",
                        name,
                        sched_name,
                        nfe,
                        counter.calls,
                        *problem.score(out),
                    )
                )
    return rows


def run_fitted(
    problem: Problem, nfes: tuple[int, ...], budget: int, iterations: int, strata: tuple[int, int]
) -> list[Row]:
    """`fit_candidates_stratified` (the `fit_solver` procedure with a pool of noises); scored on
    the eval batch.

    Rows: each candidate base sampler on its schedule fitted to the random batch ("<base>+fit",
    the schedule-only procedure) and "bespoke": the candidate with the lowest stratified
    validation error, i.e. exactly what `fit_solver(..., pool=...)` returns.
    """
    rows = []
    lo, hi = PROCESS.level_min, PROCESS.level_max
    samplers = {"deis": deis, "unipc": unipc, "dpmpp": exponential_multistep}
    hard, typical = strata
    for nfe in nfes:
        t0 = time.perf_counter()
        found = fit_candidates_stratified(
            problem.mixture.denoise,
            problem.x_fit,
            nfe,
            pool=problem.x_pool,
            hard=hard,
            typical=typical,
            level_min=lo,
            level_max=hi,
            target=problem.ref_fit,
            budget=budget,
            iterations=iterations,
        )
        for cand in found:
            if cand.batch != "random":
                continue
            counter = Counter(problem.mixture.denoise)
            sampler = samplers[cand.base]
            out = sampler(counter, problem.x_eval, cand.levels, order=cand.order)
            rows.append(
                Row(
                    problem.name,
                    "diffuse",
                    f"{cand.base}-{cand.order}+fit",
                    "fitted",
                    nfe,
                    counter.calls,
                    *problem.score(out),
                )
            )
        chosen = min(found, key=lambda c: c.validation_mse)
        counter = Counter(problem.mixture.denoise)
        with torch.no_grad():
            out = bespoke(counter, problem.x_eval, chosen.levels, coefficients=chosen.coefficients)
        rows.append(
            Row(
                problem.name,
                "diffuse",
                "bespoke",
                f"fitted ({chosen.base}-{chosen.order}, {chosen.batch})",
                nfe,
                counter.calls,
                *problem.score(out),
            )
        )
        logger.info("%s nfe %d: fitted in %.1f s", problem.name, nfe, time.perf_counter() - t0)
    return rows


# ---------------------------------------------------------------------------- diffusers


def diffusers_configs() -> dict[str, tuple[type, dict]]:
    """diffusers schedulers and settings that span the same level range (Karras / exponential)."""
    import diffusers as df

    configs: dict[str, tuple[type, dict]] = {
        "DDIM": (df.DDIMScheduler, {"timestep_spacing": "trailing"})
    }
    sigma_modes = {
        "karras": {"use_karras_sigmas": True},
        "exponential": {"use_exponential_sigmas": True},
    }
    for mode, flag in sigma_modes.items():
        configs[f"Euler/{mode}"] = (df.EulerDiscreteScheduler, flag)
        configs[f"Heun/{mode}"] = (df.HeunDiscreteScheduler, flag)
        configs[f"LMS/{mode}"] = (df.LMSDiscreteScheduler, flag)
        for order in (2, 3):
            configs[f"DPM++{order}M/{mode}"] = (
                df.DPMSolverMultistepScheduler,
                {**flag, "solver_order": order},
            )
            configs[f"DPM++{order}S/{mode}"] = (
                df.DPMSolverSinglestepScheduler,
                {**flag, "solver_order": order},
            )
            configs[f"UniPC-{order}/{mode}"] = (
                df.UniPCMultistepScheduler,
                {**flag, "solver_order": order},
            )
            configs[f"DEIS-{order}/{mode}"] = (
                df.DEISMultistepScheduler,
                {**flag, "solver_order": order},
            )
    return configs


def run_diffusers_once(
    problem: Problem, cls: type, options: dict, steps: int
) -> tuple[Tensor, int]:
    """Run one diffusers scheduler on the exact denoiser, same noise, same convention.

    The scheduler sees x_t = x / sqrt(1 + level^2) (VP scale) and an eps prediction
    (x - D(x, level)) / level at the level it is currently at (sigmas[step_index], or the DDIM
    timestep's level), so its own timestep rounding does not handicap it. DEIS ends on level_min
    instead of 0; its result is the last D, i.e. the same final jump as everyone else's.
    """
    sched = cls(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        **options,
    )
    sched.set_timesteps(steps)
    has_sigmas = hasattr(sched, "sigmas")
    level_axis = cls.__name__ in {
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "LMSDiscreteScheduler",
    }

    def level_now(t: Tensor) -> float:
        if not has_sigmas:  # DDIM
            ac = float(sched.alphas_cumprod[int(t)])
            return math.sqrt((1 - ac) / ac)
        index = sched.step_index if sched.step_index is not None else 0
        return float(sched.sigmas[index])

    x = problem.x_eval
    sample = x.clone() if level_axis else x / math.sqrt(1 + PROCESS.level_max**2)
    calls, last = 0, x
    for t in sched.timesteps:
        level = level_now(t)
        model_in = sched.scale_model_input(sample, t)
        x_level = model_in * math.sqrt(1 + level**2)
        last = problem.mixture.denoise(x_level, level)
        calls += 1
        sample = sched.step((x_level - last) / level, t, sample).prev_sample
    out = last if cls.__name__ == "DEISMultistepScheduler" else sample
    return out, calls


def run_diffusers(problem: Problem, nfes: tuple[int, ...]) -> list[Row]:
    rows = []
    for name, (cls, options) in diffusers_configs().items():
        for nfe in nfes:
            try:
                out, calls = run_diffusers_once(problem, cls, options, steps_for(name, nfe))
            except Exception as err:  # noqa: BLE001 - report and continue with the others
                logger.warning("diffusers %s at NFE %d failed: %s", name, nfe, err)
                continue
            method, _, sched = name.partition("/")
            rows.append(
                Row(
                    problem.name,
                    "diffusers",
                    method,
                    sched or "trailing",
                    nfe,
                    calls,
                    *problem.score(out),
                )
            )
    return rows


# ---------------------------------------------------------------------------- k-diffusion


def run_k_diffusion(problem: Problem, nfes: tuple[int, ...]) -> list[Row]:
    """k-diffusion's samplers on its Karras and exponential sigmas (its model convention is
    the level axis)."""
    import k_diffusion.sampling as ks

    samplers = {
        "euler": ks.sample_euler,
        "heun": ks.sample_heun,
        "lms": ks.sample_lms,
        "dpm_2": ks.sample_dpm_2,
        "dpmpp_2m": ks.sample_dpmpp_2m,
    }
    if hasattr(ks, "sample_dpmpp_3m_sde"):
        samplers["dpmpp_3m_sde(eta=0)"] = functools.partial(ks.sample_dpmpp_3m_sde, eta=0.0)
    schedules = {"karras": ks.get_sigmas_karras, "exponential": ks.get_sigmas_exponential}
    rows = []
    for name, fn in samplers.items():
        for schedule, make_sigmas in schedules.items():
            for nfe in nfes:
                steps = (nfe + 1) // 2 if name in ("heun", "dpm_2") else nfe
                sigmas = make_sigmas(steps, PROCESS.level_min, PROCESS.level_max)
                counter = Counter(problem.mixture.denoise)

                def model(x: Tensor, sigma: Tensor, counter: Counter = counter) -> Tensor:
                    return counter(x, sigma.reshape(-1)[0])

                out = fn(model, problem.x_eval.clone(), sigmas.double(), disable=True)
                rows.append(
                    Row(
                        problem.name,
                        "k-diffusion",
                        name,
                        schedule,
                        nfe,
                        counter.calls,
                        *problem.score(out),
                    )
                )
    return rows


# ---------------------------------------------------------------------------- report


def best_per_nfe(rows: list[Row], library: str, deterministic_only: bool = True) -> dict[int, Row]:
    best: dict[int, Row] = {}
    for row in rows:
        if row.library != library or (deterministic_only and row.method in STOCHASTIC):
            continue
        if not math.isfinite(row.rmse) or row.nfe > row.target_nfe:
            continue
        if row.target_nfe not in best or row.rmse < best[row.target_nfe].rmse:
            best[row.target_nfe] = row
    return best


def table(rows: list[Row], problem: str, nfes: tuple[int, ...]) -> str:
    """Markdown: RMSE per (library, method, schedule) and NFE; the best per library per NFE."""
    keyed: dict[tuple[str, str, str], dict[int, Row]] = {}
    for row in rows:
        if row.problem == problem:
            keyed.setdefault((row.library, row.method, row.schedule), {})[row.target_nfe] = row
    head = "| library | method | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [head, "|" + "---|" * (3 + len(nfes))]
    for (lib, method, sched), by_nfe in sorted(keyed.items()):
        cells = []
        for n in nfes:
            r = by_nfe.get(n)
            cells.append(
                "" if r is None else f"{r.rmse:.2e}" + ("" if r.nfe == n else f" ({r.nfe})")
            )
        lines.append(f"| {lib} | {method} | {sched} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[Row], problem: str, nfes: tuple[int, ...], libraries: list[str]) -> str:
    probe = [r for r in rows if r.problem == problem]
    best = {lib: best_per_nfe(probe, lib) for lib in libraries}
    lines = ["| NFE | best diffuse (RMSE) | best other (RMSE) | ratio |", "|---|---|---|---|"]
    for n in nfes:
        ours = best["diffuse"].get(n)
        others = [best[lib][n] for lib in libraries if lib != "diffuse" and n in best[lib]]
        other = min(others, key=lambda r: r.rmse) if others else None
        if ours is None or other is None:
            continue
        lines.append(
            f"| {n} | {ours.method} / {ours.schedule} ({ours.rmse:.3e}) | {other.library} "
            f"{other.method} / {other.schedule} ({other.rmse:.3e}) | {ours.rmse / other.rmse:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="samplers_benchmark.json", help="where to write rows")
    parser.add_argument("--eval", type=int, default=2000, help="evaluation samples (64-D)")
    parser.add_argument("--eval-2d", type=int, default=1000, help="evaluation samples (ring)")
    parser.add_argument("--fit", type=int, default=1024, help="fitting samples (1/4 validation)")
    parser.add_argument("--pool", type=int, default=65536, help="noises for the stratified batches")
    parser.add_argument("--hard", type=int, default=256, help="hard noises per stratified batch")
    parser.add_argument("--typical", type=int, default=768, help="others per stratified batch")
    parser.add_argument("--budget", type=int, default=80, help="fit_schedule sampler runs")
    parser.add_argument("--iterations", type=int, default=40, help="fit_bespoke L-BFGS evals")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--mixture-seed", type=int, default=0, help="seed of the 64-D mixture")
    parser.add_argument("--no-cross", action="store_true", help="skip the sampler x schedule grid")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if importlib.util.find_spec("diffusers") is not None:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    nfes, fit_nfes = NFES, FIT_NFES
    if args.quick:
        args.eval, args.eval_2d, args.fit, args.budget, args.iterations = 200, 200, 64, 20, 10
        args.pool, args.hard, args.typical = 512, 16, 48
        nfes, fit_nfes = (5, 10), (5,)
    strata = (args.hard, args.typical)
    start = time.perf_counter()
    problems = [
        make_problem(
            "mixture64",
            GaussianMixture.random(
                64,
                10,
                seed=args.mixture_seed,
                rank=16,
                mean_scale=0.5,
                std_range=(0.1, 0.5),
                noise_std=0.05,
            ),
            args.eval,
            args.fit,
            args.pool,
        ),
        make_problem(
            "ring8",
            GaussianMixture.ring(8, radius=1.0, std=0.1),
            args.eval_2d,
            args.fit,
            args.pool,
        ),
    ]
    has_diffusers = importlib.util.find_spec("diffusers") is not None
    has_kd = importlib.util.find_spec("k_diffusion") is not None
    if not has_diffusers:
        logger.warning("diffusers is MISSING (pip install 'diffuse[bench]'): no diffusers rows")
    if not has_kd:
        logger.warning(
            "k-diffusion is MISSING (it imports torchvision, which does not import "
            "with this torch): no k-diffusion rows"
        )
    rows: list[Row] = []
    timings = {}
    for problem in problems:
        for label, run in [
            ("diffuse", None if args.no_cross else lambda p=problem: run_diffuse(p, nfes)),
            (
                "fitted",
                lambda p=problem: run_fitted(p, fit_nfes, args.budget, args.iterations, strata),
            ),
            ("diffusers", (lambda p=problem: run_diffusers(p, nfes)) if has_diffusers else None),
            ("k-diffusion", (lambda p=problem: run_k_diffusion(p, nfes)) if has_kd else None),
        ]:
            if run is None:
                continue
            t0 = time.perf_counter()
            rows.extend(run())
            timings[f"{problem.name}/{label}"] = round(time.perf_counter() - t0, 1)
            logger.info("%s %s: %.1f s", problem.name, label, timings[f"{problem.name}/{label}"])
    libraries = (
        ["diffuse"] + (["diffusers"] if has_diffusers else []) + (["k-diffusion"] if has_kd else [])
    )
    for problem in problems:
        print(
            f"\n## {problem.name}: RMSE to the reference end point "
            f"(exact-vs-exact sliced W2 {problem.sw2_exact:.3e})\n"
        )
        print(table(rows, problem.name, nfes))
        print(f"\n### {problem.name}: best deterministic method per NFE\n")
        print(summary(rows, problem.name, nfes, libraries))
    result = {
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "nfes": list(nfes),
        "range": [PROCESS.level_min, PROCESS.level_max],
        "k_diffusion": "present" if has_kd else "missing (torchvision does not import here)",
        "sw2_exact": {p.name: p.sw2_exact for p in problems},
        "seconds": round(time.perf_counter() - start, 1),
        "timings": timings,
        "rows": [asdict(r) for r in rows],
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {len(rows)} rows to {args.json} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
