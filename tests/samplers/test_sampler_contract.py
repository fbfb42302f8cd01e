"""One shared suite for every registered sampler (docs/architecture.md, "Samplers are
functions")."""

from __future__ import annotations

import re

import pytest
import torch

from diffuse.samplers import SAMPLERS, STOCHASTIC, StepInfo, get_sampler, karras

NAMES = sorted(SAMPLERS)
LEVELS = karras(None, 6, level_min=0.05, level_max=10.0)


def _noise(x):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)


@pytest.fixture
def problem(smooth_mixture):
    x = 10.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return smooth_mixture, x


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_finite(name, problem):
    mixture, x = problem
    for dtype in (torch.float64, torch.float32):
        out = get_sampler(name)(mixture.denoise, x.to(dtype), LEVELS, noise=_noise)
        assert out.shape == x.shape and out.dtype == dtype
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", NAMES)
def test_denoise_sees_scalar_float64_cpu_levels_from_the_schedule(name, problem):
    mixture, x = problem
    seen = []

    def denoise(xx, level):
        assert isinstance(level, torch.Tensor) and level.ndim == 0
        assert level.dtype == torch.float64 and level.device.type == "cpu"
        seen.append(float(level))
        return mixture.denoise(xx, level)

    get_sampler(name)(denoise, x, LEVELS, noise=_noise)
    assert seen and all(v > 0 for v in seen)
    if name != "heun":  # heun (without churn) also visits the levels, twice
        assert seen == pytest.approx(LEVELS[:-1].tolist())


@pytest.mark.parametrize("name", NAMES)
def test_callback_reports_every_step(name, problem):
    mixture, x = problem
    infos: list[StepInfo] = []
    out = get_sampler(name)(mixture.denoise, x, LEVELS, noise=_noise, callback=infos.append)
    steps = len(LEVELS) - 1
    assert [i.index for i in infos] == list(range(steps))
    assert [i.level for i in infos] == pytest.approx(LEVELS[1:].tolist())
    assert all(i.steps == steps and i.x.shape == x.shape for i in infos)
    assert torch.equal(infos[-1].x, out)
    assert torch.equal(infos[-1].denoised, out)  # the jump to zero returns the last D
    with pytest.raises(AttributeError):
        infos[0].index = 3  # frozen


@pytest.mark.parametrize("name", NAMES)
def test_callback_replacement_is_used(name, problem):
    mixture, x = problem
    marker = torch.full_like(x, 0.25)

    def pin_last(info: StepInfo):
        return marker if info.index == info.steps - 1 else None

    out = get_sampler(name)(mixture.denoise, x, LEVELS, noise=_noise, callback=pin_last)
    assert torch.equal(out, marker)

    def bad(info: StepInfo):
        return torch.zeros(1)

    with pytest.raises(ValueError, match=re.escape("(1,)")):
        get_sampler(name)(mixture.denoise, x, LEVELS, noise=_noise, callback=bad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("returned", [None, True, False, 1, 2.5, "text", (1, 2)])
def test_callback_returning_a_non_tensor_keeps_the_sample(name, returned, problem):
    # tqdm's update() returns True: a progress bar passed as the callback must not break sampling
    mixture, x = problem
    plain = get_sampler(name)(mixture.denoise, x, LEVELS, noise=_noise)
    out = get_sampler(name)(
        mixture.denoise, x, LEVELS, noise=_noise, callback=lambda info: returned
    )
    assert torch.equal(out, plain)


@pytest.mark.parametrize("name", sorted(set(NAMES) - STOCHASTIC))
def test_deterministic_samplers_ignore_noise(name, problem):
    mixture, x = problem
    a = get_sampler(name)(mixture.denoise, x, LEVELS)
    b = get_sampler(name)(mixture.denoise, x, LEVELS, noise=_noise)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_nan_input_raises_with_the_value(name, problem):
    mixture, x = problem
    x = x.clone()
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"x\[1, 2\] = nan"):
        get_sampler(name)(mixture.denoise, x, LEVELS, noise=_noise)


BAD_LEVELS = [
    (torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64), "0.1"),  # does not end in 0
    (torch.tensor([1.0, 10.0, 0.0], dtype=torch.float64), "levels[0]=1.0 <= levels[1]=10.0"),
    (torch.tensor([10.0, 10.0, 0.0], dtype=torch.float64), "levels[0]=10.0 <= levels[1]=10.0"),
    (torch.tensor([0.0], dtype=torch.float64), "shape (1,)"),
    (torch.ones(2, 2, dtype=torch.float64), "shape (2, 2)"),
    (torch.tensor([10.0, float("nan"), 0.0], dtype=torch.float64), "nan"),
    (torch.tensor([10.0, -1.0, 0.0], dtype=torch.float64), "-1.0"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("levels", "match"), BAD_LEVELS, ids=[m for _, m in BAD_LEVELS])
def test_bad_levels_raise_with_the_value(name, levels, match, problem):
    mixture, x = problem
    with pytest.raises(ValueError, match=re.escape(match)):
        get_sampler(name)(mixture.denoise, x, levels, noise=_noise)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("ddim", {"eta": -0.5}, "-0.5"),
        ("ddim", {"eta": 1.5}, "1.5"),
        ("euler_ancestral", {"eta": float("nan")}, "nan"),
        ("heun", {"s_churn": -1.0}, "-1.0"),
        ("unipc", {"order": 5}, "5"),
        ("deis", {"order": 0}, "0"),
        ("dpmpp_2m_sde", {"s_noise": -2.0}, "-2.0"),
    ],
)
def test_bad_options_raise_with_the_value(name, options, match, problem):
    mixture, x = problem
    with pytest.raises(ValueError, match=re.escape(match)):
        get_sampler(name)(mixture.denoise, x, LEVELS, **options)


def test_single_step_is_one_denoise(problem):
    mixture, x = problem
    levels = torch.tensor([10.0, 0.0], dtype=torch.float64)
    for name in NAMES:
        out = get_sampler(name)(mixture.denoise, x, levels, noise=_noise)
        assert torch.equal(out, mixture.denoise(x, torch.tensor(10.0, dtype=torch.float64)))
