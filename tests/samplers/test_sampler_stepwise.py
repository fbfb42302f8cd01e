"""The stepper form: a `StepwiseRun` gives bit for bit what the plain sampler call gives, alone
or interleaved with other runs at other steps in one network call per tick."""

from __future__ import annotations

import functools

import pytest
import torch

from diffuse.samplers import SAMPLERS, SeededNoise, karras
from diffuse.samplers.stepwise import RunCancelled, StepwiseRun, drive, pause

LEVELS = karras(None, 9, level_min=0.02, level_max=10.0)


def _start(seeds):
    noise = SeededNoise(seeds, dtype=torch.float64)
    return noise, noise.initial((3,)) * float(LEVELS[0])


def _body(name, seeds, levels=LEVELS, calls=None):
    """body(call) running sampler `name` from the seeds' noise, counting its calls."""

    def body(call):
        noise, x = _start(seeds)

        def denoise(x, level):
            if calls is not None:
                calls.append(x.shape[0])
            return call(x, level)

        return SAMPLERS[name](denoise, x, levels, noise=noise)

    return body


def _rowwise(mixture):
    """A network whose every row depends on that row alone (scalar or per-row levels)."""

    def network(x, level, cond=None):
        level = torch.as_tensor(level, dtype=torch.float64).expand(x.shape[0])
        return torch.cat([mixture.denoise(x[i : i + 1], level[i]) for i in range(x.shape[0])])

    return network


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_stepped_run_equals_the_plain_call(name, smooth_mixture):
    network = _rowwise(smooth_mixture)
    noise, x = _start([3, 4])
    plain = SAMPLERS[name](lambda x, level: network(x, level), x, LEVELS, noise=noise)
    stepped = drive(StepwiseRun(_body(name, [3, 4])), network)
    assert torch.equal(stepped, plain)


def test_runs_at_different_steps_share_one_call_per_tick(smooth_mixture):
    network = _rowwise(smooth_mixture)
    # (sampler, seeds, steps): different samplers, batch sizes and lengths, started at
    # different ticks, as requests reach a server.
    plans = [
        ("dpmpp_2m", [1], 9, 0),
        ("unipc", [2, 3], 6, 2),
        ("heun", [4], 5, 3),
        ("dpmpp_2m_sde", [5, 6, 7], 7, 1),
        ("deis", [8], 4, 5),
    ]
    alone = []
    for name, seeds, steps, _ in plans:
        levels = karras(None, steps, level_min=0.02, level_max=10.0)
        alone.append(drive(StepwiseRun(_body(name, seeds, levels)), network))
    runs: dict[int, StepwiseRun] = {}
    tick, calls = 0, 0
    while len(runs) < len(plans) or any(not r.done for r in runs.values()):
        for k, (name, seeds, steps, start) in enumerate(plans):
            if start == tick:
                levels = karras(None, steps, level_min=0.02, level_max=10.0)
                runs[k] = StepwiseRun(_body(name, seeds, levels))
        live = [r for r in runs.values() if not r.done]
        if live:
            xs = torch.cat([r.call.x for r in live])
            levels = torch.cat(
                [torch.as_tensor(r.call.level).expand(r.call.x.shape[0]) for r in live]
            )
            out = network(xs, levels).split([r.call.x.shape[0] for r in live])
            calls += 1
            for r, o in zip(live, out):  # resumed together, the runs go on side by side
                r.resume(o)
            for r in live:
                r.settle()
        tick += 1
    for k, expected in enumerate(alone):
        assert torch.equal(runs[k].result(), expected), plans[k][0]
    assert calls < sum(steps for _, _, steps, _ in plans)  # calls were shared


def test_cancel_raises_inside_the_body_and_ends_the_run(smooth_mixture):
    seen = []

    def body(call):
        try:
            return SAMPLERS["euler"](call, torch.ones(1, 3), LEVELS)
        except RunCancelled:
            seen.append("cancelled")
            raise

    run = StepwiseRun(body)
    run.answer(smooth_mixture.denoise(run.call.x, run.call.level))
    run.cancel()
    assert run.done and run.call is None and seen == ["cancelled"]
    with pytest.raises(RunCancelled):
        run.result()
    run.cancel()  # a no-op once done


def test_errors_of_the_body_reach_the_driver():
    run = StepwiseRun(functools.partial(SAMPLERS["euler"], x=torch.ones(1, 3), levels=LEVELS[:1]))
    assert run.done
    with pytest.raises(ValueError, match="at least 2 values"):
        run.result()
    with pytest.raises(RuntimeError, match="no call to answer"):
        run.answer(torch.ones(1, 3))


def test_result_before_the_end_is_an_error(smooth_mixture):
    run = StepwiseRun(_body("euler", [0]))
    with pytest.raises(RuntimeError, match="not finished"):
        run.result()
    run.cancel()


def test_a_body_pauses_on_requests_of_its_own(smooth_mixture):
    def body(call):
        x = SAMPLERS["euler"](call, torch.ones(1, 3), torch.cat([LEVELS[:1], LEVELS[-1:]]))
        return pause(("double", x))  # e.g. a server's decode, made for many runs at once

    run = StepwiseRun(body)
    run.answer(smooth_mixture.denoise(run.call.x, run.call.level))
    kind, x = run.call
    assert kind == "double" and not run.done
    run.answer(2 * x)
    assert run.done and torch.equal(run.result(), 2 * x)
    with pytest.raises(RuntimeError, match="body of a StepwiseRun"):
        pause("outside")


def test_drive_answers_network_calls_only():
    run = StepwiseRun(lambda call: pause("a request"))
    with pytest.raises(TypeError, match="network calls only"):
        drive(run, lambda x, level, cond=None: x)
    run.cancel()
    with pytest.raises(RunCancelled):
        run.result()
