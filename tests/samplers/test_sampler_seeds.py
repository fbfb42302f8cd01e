"""Per-sample seeds: the same samples in one batch of 8 or in eight batches of 1."""

from __future__ import annotations

import functools

import pytest
import torch

from diffuse.samplers import SAMPLERS, SeededNoise, heun, karras

SEEDS = [0, 1, 2, 3, 42, 1234, 2**32 + 5, 7]
LEVELS = karras(None, 12, level_min=0.02, level_max=10.0)
STOCHASTIC_RUNS = {
    **{
        name: SAMPLERS[name]
        for name in ("ddpm_ancestral", "euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde")
    },
    "ddim_eta": functools.partial(SAMPLERS["ddim"], eta=0.7),
    "heun_churn": functools.partial(heun, s_churn=20.0),
}


def _run(sampler, mixture, seeds, dtype=torch.float64):
    noise = SeededNoise(seeds, dtype=dtype)
    x = noise.initial((3,)) * float(LEVELS[0])
    return sampler(mixture.denoise, x, LEVELS, noise=noise)


def test_initial_noise_is_batch_independent():
    batch = SeededNoise(SEEDS).initial((4, 5))
    singles = torch.cat([SeededNoise([s]).initial((4, 5)) for s in SEEDS])
    assert batch.shape == (8, 4, 5)
    assert torch.equal(batch, singles)


@pytest.mark.parametrize("name", list(STOCHASTIC_RUNS))
def test_stochastic_samples_are_batch_independent(name, smooth_mixture):
    sampler = STOCHASTIC_RUNS[name]
    batch = _run(sampler, smooth_mixture, SEEDS)
    singles = torch.cat([_run(sampler, smooth_mixture, [s]) for s in SEEDS])
    assert float((batch - singles).abs().max()) < 1e-12
    # and a different seed gives a different sample
    assert float((batch[0] - batch[1]).abs().max()) > 1e-3


def test_noise_follows_x_dtype_and_device():
    noise = SeededNoise([1, 2], dtype=torch.float32)
    x = torch.zeros(2, 3, dtype=torch.float16)
    assert noise(x).dtype == torch.float16
    assert noise.initial((3,)).dtype == torch.float32
    # float64 streams are drawn in float64
    assert SeededNoise([1], dtype=torch.float64).initial((2,)).dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_noise_on_gpu():
    cpu = SeededNoise(SEEDS).initial((16,))
    gpu = SeededNoise(SEEDS, device="cuda").initial((16,))
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize(
    ("seeds", "match"),
    [([], r"\[\]"), ([1.5], "1.5"), ([-1], "-1"), ([True], "True")],
)
def test_bad_seeds(seeds, match):
    with pytest.raises(ValueError, match=match):
        SeededNoise(seeds)


def test_batch_must_match_seeds():
    with pytest.raises(ValueError, match="3"):
        SeededNoise([1, 2])(torch.zeros(3, 2))
