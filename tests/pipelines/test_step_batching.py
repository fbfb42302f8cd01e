"""Cross-request step batching in the library: text-to-image runs with different prompts (of
different token lengths), seeds, step counts, guidance and samplers, started at different
ticks, share network calls and give exactly the images each gives alone."""

from __future__ import annotations

import pytest
import torch

from diffuse.cli import main
from diffuse.pipelines.sample import invariant_network
from diffuse.pipelines.step_batching import (
    DecodeCall,
    batch_key,
    ragged_context_ok,
    run_calls,
    run_decodes,
)
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.samplers.stepwise import NetworkCall, StepwiseRun
from text_recipe import train_args

TINY = ["train.steps=2", "checkpoint.every_steps=2", "sample.every_steps=0", "optim.lr=0.03"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("batching") / "run"
    assert main(train_args(out, *TINY)) == 0
    return load_pipeline(out)


@pytest.mark.parametrize("ragged", [False, True], ids=["by-length", "ragged"])
def test_runs_started_at_different_ticks_equal_the_pipeline_alone(pipe, ragged):
    requests = [  # (prompt, negative, seeds, steps, guidance, sampler, first tick)
        ("a red circle above a blue square", "", (1,), 5, 4.0, "dpmpp_2m", 0),
        ("a blue circle", "", (2, 3), 4, 4.0, "euler", 1),
        ("a red circle above a blue square", "a star", (4,), 3, 2.0, "unipc", 1),
        ("two red triangles", "", (5,), 4, 1.0, "heun", 2),
        ("a white square to the left of a purple circle", "", (6,), 3, 4.0, "dpmpp_2m_sde", 3),
    ]
    params = [
        pipe.params(p, n, seeds=s, steps=k, guidance=g, sampler=m)
        for p, n, s, k, g, m, _ in requests
    ]
    alone = [pipe.generate(p) for p in params]
    network = invariant_network(pipe.model.denoiser)
    runs: dict[int, StepwiseRun] = {}
    assert ragged_context_ok(pipe.model.denoiser.net)  # a U-Net: cross-attention only
    tick, calls, strict_calls, pending_calls = 0, 0, 0, 0
    with torch.no_grad():
        while len(runs) < len(requests) or any(not r.done for r in runs.values()):
            for i, request in enumerate(requests):
                if request[-1] == tick:
                    runs[i] = StepwiseRun(lambda call, p=params[i]: pipe.generate(p, network=call))
            live = [r for r in runs.values() if not r.done]
            if live:
                pending = [r.call for r in live]
                pending_calls += len(pending)
                outputs = run_calls(network, pending, lambda rows: None, ragged)
                calls += len({batch_key(c, ragged) for c in pending})
                strict_calls += len({batch_key(c) for c in pending})
                for r, out in zip(live, outputs):
                    r.answer(out)
            tick += 1
    for i, expected in enumerate(alone):
        assert torch.equal(runs[i].result(), expected), requests[i]
    assert calls < pending_calls  # runs shared calls
    if ragged:  # prompts of different token lengths shared calls too
        assert calls < strict_calls


def test_calls_are_grouped_by_conditioning_shape(pipe):
    cond = {k: v for k, v in pipe.encoder.encode(["a blue circle"]).as_cond().items()}
    longer = pipe.encoder.encode(["a white square to the left of a purple circle"]).as_cond()
    x = torch.zeros(2, *pipe.model.shape)
    short_call = NetworkCall(x, torch.tensor(1.0, dtype=torch.float64), cond)
    long_call = NetworkCall(x, torch.tensor(1.0, dtype=torch.float64), dict(longer))
    assert batch_key(short_call) != batch_key(long_call)
    assert batch_key(short_call) == batch_key(NetworkCall(x[:1], torch.tensor(2.0), cond))
    sizes = []
    network = invariant_network(pipe.model.denoiser)
    with torch.no_grad():
        outs = run_calls(network, [short_call, long_call, short_call], sizes.append)
    assert sizes == [4, 2] and [o.shape[0] for o in outs] == [2, 2, 2]
    assert batch_key(short_call, True) == batch_key(long_call, True)
    sizes = []
    with torch.no_grad():
        ragged = run_calls(network, [short_call, long_call, short_call], sizes.append, True)
    assert sizes == [6]  # one call: the short contexts padded, each row over its own tokens
    assert all(torch.equal(a, b) for a, b in zip(ragged, outs))


def test_decodes_of_many_runs_in_one_call_equal_each_alone(pipe):
    shape = pipe.model.shape
    generator = torch.Generator().manual_seed(0)
    samples = [torch.randn(n, *shape, generator=generator) for n in (1, 2, 1)]
    other = torch.randn(1, shape[0], shape[1] * 2, shape[2] * 2, generator=generator)
    calls = [DecodeCall(s) for s in samples] + [DecodeCall(other)]
    sizes = []

    def decode(latents):
        sizes.append(latents.shape[0])
        return pipe.model.decode(latents)

    with torch.no_grad():
        images = run_decodes(decode, calls)
        alone = [pipe.model.decode(c.samples) for c in calls]
    assert sizes == [4, 1]  # one decode per sample shape
    assert all(torch.equal(a, b) for a, b in zip(images, alone))
