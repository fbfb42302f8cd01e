"""Fitted schedules and bespoke solvers: valid output, better than their start, validated input."""

from __future__ import annotations

import functools

import pytest
import torch

from diffuse.samplers import (
    BespokeCoefficients,
    bespoke,
    deis,
    dpmpp_2m,
    exponential_multistep,
    fit_bespoke,
    fit_candidates,
    fit_candidates_stratified,
    fit_schedule,
    fit_solver,
    initial_coefficients,
    karras,
    unipc,
)
from diffuse.samplers.fit import stratified_noises, weighted_mse

LO, HI = 0.02, 10.0


@pytest.fixture(scope="module")
def batches(smooth_mixture):
    g = torch.Generator().manual_seed(9)
    fit = HI * torch.randn(32, 3, generator=g, dtype=torch.float64)
    held_out = HI * torch.randn(32, 3, generator=g, dtype=torch.float64)
    targets = [
        smooth_mixture.reference_endpoint(x, HI, LO, rtol=1e-9, atol=1e-9) for x in (fit, held_out)
    ]
    return fit, held_out, *targets


def _mse(a, b):
    return float(((a - b) ** 2).mean())


def test_fit_schedule_keeps_the_range_and_improves(smooth_mixture, batches):
    fit, held_out, target_fit, target_held = batches
    levels = fit_schedule(
        smooth_mixture.denoise,
        dpmpp_2m,
        fit,
        6,
        level_min=LO,
        level_max=HI,
        target=target_fit,
        budget=60,
    )
    assert levels.shape == (7,) and levels[-1] == 0
    assert bool(torch.all(levels[:-1] > levels[1:]))
    assert levels[0] == HI and levels[-2] >= LO
    start = karras(None, 6, level_min=LO, level_max=HI)
    assert _mse(dpmpp_2m(smooth_mixture.denoise, fit, levels), target_fit) <= _mse(
        dpmpp_2m(smooth_mixture.denoise, fit, start), target_fit
    )
    pinned = fit_schedule(
        smooth_mixture.denoise,
        dpmpp_2m,
        fit,
        6,
        level_min=LO,
        level_max=HI,
        target=target_fit,
        budget=30,
        free_end=False,
        init=start,
    )
    assert pinned[0] == HI and pinned[-2] == LO


def test_fit_schedule_default_reference_and_short_schedules(smooth_mixture, batches):
    fit = batches[0]
    two = fit_schedule(
        smooth_mixture.denoise, dpmpp_2m, fit, 2, level_min=LO, level_max=HI, free_end=False
    )
    assert two.tolist() == [HI, LO, 0.0]
    one = fit_schedule(smooth_mixture.denoise, dpmpp_2m, fit, 1, level_min=LO, level_max=HI)
    assert one.tolist() == [HI, 0.0]
    levels = fit_schedule(
        smooth_mixture.denoise,
        dpmpp_2m,
        fit,
        4,
        level_min=LO,
        level_max=HI,
        budget=10,
        reference_steps=64,
    )
    assert levels.shape == (5,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"budget": 0}, "budget"), ({"init": torch.tensor([5.0, 1.0, 0.0])}, "init")],
)
def test_fit_schedule_validation(smooth_mixture, batches, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_schedule(
            smooth_mixture.denoise, dpmpp_2m, batches[0], 3, level_min=LO, level_max=HI, **kwargs
        )
    with pytest.raises(ValueError, match="level_min=20.0 >= level_max=10.0"):
        fit_schedule(smooth_mixture.denoise, dpmpp_2m, batches[0], 3, level_min=20.0, level_max=HI)


@pytest.mark.parametrize(
    ("base", "order", "sampler"),
    [
        ("deis", 1, functools.partial(deis, order=1)),
        ("deis", 2, functools.partial(deis, order=2)),
        ("deis", 3, deis),
        ("dpmpp", 2, functools.partial(exponential_multistep, order=2)),
        ("dpmpp", 3, exponential_multistep),
        ("unipc", 1, functools.partial(unipc, order=1)),
        ("unipc", 2, unipc),
        ("unipc", 3, functools.partial(unipc, order=3)),
    ],
)
def test_initial_coefficients_reproduce_the_base_sampler(
    smooth_mixture, batches, base, order, sampler
):
    x = batches[0]
    levels = karras(None, 8, level_min=LO, level_max=HI)
    coefficients = initial_coefficients(levels, base=base, order=order)
    out = bespoke(smooth_mixture.denoise, x, levels, coefficients=coefficients)
    assert float((out - sampler(smooth_mixture.denoise, x, levels)).abs().max()) < 1e-10


def test_fit_bespoke_improves_on_held_out_noise(smooth_mixture, batches):
    fit, held_out, target_fit, target_held = batches
    levels = karras(None, 5, level_min=LO, level_max=HI)
    start = initial_coefficients(levels, base="deis", order=2)
    fitted = fit_bespoke(smooth_mixture.denoise, fit, levels, target=target_fit, iterations=30)
    before = _mse(
        bespoke(smooth_mixture.denoise, held_out, levels, coefficients=start), target_held
    )
    with torch.no_grad():
        after = _mse(
            bespoke(smooth_mixture.denoise, held_out, levels, coefficients=fitted), target_held
        )
    assert after < 0.5 * before
    assert BespokeCoefficients.from_dict(fitted.to_dict()) == fitted


def test_bespoke_validation(smooth_mixture, batches):
    levels = karras(None, 4, level_min=LO, level_max=HI)
    coefficients = initial_coefficients(levels)
    other = karras(None, 4, level_min=LO, level_max=5.0)
    with pytest.raises(ValueError, match="differ"):
        bespoke(smooth_mixture.denoise, batches[0], other, coefficients=coefficients)
    with pytest.raises(ValueError, match="row lengths"):
        BespokeCoefficients((1.0, 0.0), (1.0,), ((1.0, 2.0),))
    with pytest.raises(ValueError, match="'heun'"):
        initial_coefficients(levels, base="heun")

    def frozen(x, level):
        return smooth_mixture.denoise(x, level).detach()

    with pytest.raises(ValueError, match="differentiate"):
        fit_bespoke(frozen, batches[0], levels, target=batches[2], iterations=2)


def test_fit_solver_picks_the_best_validated_candidate(smooth_mixture, batches):
    fit, held_out, target_fit, target_held = batches
    kwargs = {"level_min": LO, "level_max": HI, "target": target_fit, "budget": 12, "iterations": 6}
    found = fit_candidates(smooth_mixture.denoise, fit, 4, **kwargs)
    assert [(c.base, c.order) for c in found] == [("unipc", 2), ("dpmpp", 3)]
    chosen = fit_solver(smooth_mixture.denoise, fit, 4, **kwargs)
    best = min(found, key=lambda c: c.validation_mse)
    assert chosen == best.coefficients
    levels = torch.tensor(chosen.levels, dtype=torch.float64)
    with torch.no_grad():
        out = bespoke(smooth_mixture.denoise, held_out, levels, coefficients=chosen)
    start = karras(None, 4, level_min=LO, level_max=HI)
    assert _mse(out, target_held) < _mse(
        dpmpp_2m(smooth_mixture.denoise, held_out, start), target_held
    )
    with pytest.raises(ValueError, match="1.5"):
        fit_solver(smooth_mixture.denoise, fit, 4, validation_fraction=1.5, **kwargs)


def test_weighted_mse_weights_whole_samples():
    out = torch.tensor([[1.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    target = torch.zeros_like(out)
    assert float(weighted_mse(out, target)) == pytest.approx(5.0)
    assert float(weighted_mse(out, target, torch.tensor([3.0, 1.0]))) == pytest.approx(3.0)


def test_stratified_noises_keep_the_sensitive_ones_and_estimate_the_pool_mean(smooth_mixture):
    pool = HI * torch.randn(400, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x, w = stratified_noises(
        smooth_mixture.denoise, pool, 4, level_min=LO, level_max=HI, hard=20, typical=100
    )
    assert x.shape == (120, 3) and w.shape == (120,)
    assert float(w.sum()) == pytest.approx(400.0)  # weights count the pool
    assert int((w == 1).sum()) == 20
    # the hard noises are those where a coarse and a finer solve disagree most
    coarse = unipc(smooth_mixture.denoise, pool, karras(None, 4, level_min=LO, level_max=HI))
    fine = unipc(smooth_mixture.denoise, pool, karras(None, 8, level_min=LO, level_max=HI), order=3)
    gap = ((coarse - fine) ** 2).mean(1)
    hard_gap = (
        (
            unipc(smooth_mixture.denoise, x[w == 1], karras(None, 4, level_min=LO, level_max=HI))
            - unipc(
                smooth_mixture.denoise,
                x[w == 1],
                karras(None, 8, level_min=LO, level_max=HI),
                order=3,
            )
        )
        ** 2
    ).mean(1)
    assert float(hard_gap.min()) >= float(torch.sort(gap, descending=True).values[19]) - 1e-12
    assert bool((w[:60] == 1).any()) and bool((w[60:] == 1).any())  # spread through the batch
    with pytest.raises(ValueError, match="hard"):
        stratified_noises(
            smooth_mixture.denoise, pool, 4, level_min=LO, level_max=HI, hard=300, typical=200
        )


def test_fit_candidates_takes_weights(smooth_mixture, batches):
    fit, _, target_fit, _ = batches
    weights = torch.linspace(1.0, 2.0, fit.shape[0], dtype=torch.float64)
    found = fit_candidates(
        smooth_mixture.denoise,
        fit,
        4,
        level_min=LO,
        level_max=HI,
        target=target_fit,
        budget=10,
        iterations=4,
        weights=weights,
    )
    assert len(found) == 2 and all(c.validation_mse >= 0 for c in found)


def test_fit_solver_with_a_pool_judges_every_candidate_on_a_stratified_batch(
    smooth_mixture, batches
):
    fit, held_out, target_fit, target_held = batches
    pool = HI * torch.randn(200, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    kwargs = {"level_min": LO, "level_max": HI, "budget": 8, "iterations": 4}
    strata = {"pool": pool, "hard": 10, "typical": 30}
    found = fit_candidates_stratified(
        smooth_mixture.denoise, fit, 4, target=target_fit, **strata, **kwargs
    )
    assert [(c.base, c.batch) for c in found] == [
        ("unipc", "random"),
        ("dpmpp", "random"),
        ("unipc", "stratified"),
        ("dpmpp", "stratified"),
    ]
    chosen = fit_solver(smooth_mixture.denoise, fit, 4, target=target_fit, **strata, **kwargs)
    assert chosen == min(found, key=lambda c: c.validation_mse).coefficients
    with torch.no_grad():
        out = bespoke(
            smooth_mixture.denoise,
            held_out,
            torch.tensor(chosen.levels, dtype=torch.float64),
            coefficients=chosen,
        )
    start = karras(None, 4, level_min=LO, level_max=HI)
    assert _mse(out, target_held) < _mse(
        dpmpp_2m(smooth_mixture.denoise, held_out, start), target_held
    )
    with pytest.raises(ValueError, match="too small"):
        fit_candidates_stratified(
            smooth_mixture.denoise, fit, 4, pool=pool[:50], hard=10, typical=30, **kwargs
        )
