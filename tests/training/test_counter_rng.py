"""Counter-based streams: exact SplitMix64 bits, batch invariance, and the draws' distributions."""

import math

import pytest
import torch
from scipy import stats

from diffuse.processes import EDM, VE, CosineVP, DiscreteVP, RectifiedFlow
from diffuse.training.counter_rng import (
    batch_keys,
    mix64,
    mix_seeds,
    stream_bits,
    stream_normal,
    stream_uniform,
)
from diffuse.training.loop import draw_per_sample

GAMMA = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def test_splitmix64_known_answer():
    # The first output of SplitMix64 seeded with 0 (the published reference value).
    assert mix64(GAMMA) == 0xE220A8397B1DCDAF
    assert stream_bits(torch.tensor([0]), 1)[0, 0].item() & MASK == 0xE220A8397B1DCDAF


def test_stream_bits_match_python_integers_for_any_key():
    keys = torch.tensor([0, 1, -1, 2**62 + 12345, -(2**63), 987654321], dtype=torch.int64)
    got = stream_bits(keys, 7, offset=5)
    for row, key in zip(got, keys.tolist(), strict=True):
        want = [mix64(((key & MASK) + (i + 1) * GAMMA) & MASK) for i in range(5, 12)]
        assert [v & MASK for v in row.tolist()] == want


def test_mix_seeds_is_the_chained_splitmix():
    h = GAMMA
    for v in (3, 141, 59):
        h = mix64(((h ^ v) + GAMMA) & MASK)
    assert mix_seeds(3, 141, 59) == h >> 1
    assert 0 <= mix_seeds(2**70, -5) < 2**63


def test_keys_do_not_depend_on_the_batch_they_are_made_in():
    whole = batch_keys(mix_seeds(0, 7), 0, 64)
    torch.testing.assert_close(batch_keys(mix_seeds(0, 7), 40, 24), whole[40:])
    assert len(set(whole.tolist())) == 64
    assert not torch.equal(batch_keys(mix_seeds(0, 8), 0, 64), whole)


def test_stream_normal_is_standard_normal_and_independent():
    keys = batch_keys(11, 0, 256)
    z = stream_normal(keys, (3, 9, 9))
    assert z.shape == (256, 3, 9, 9) and z.dtype == torch.float32
    flat = z.flatten().double().numpy()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 4 / math.sqrt(flat.size)
    # Neither neighbouring values (the Box-Muller pair) nor neighbouring samples correlate.
    pairs = z.reshape(256, -1)
    for a, b in ((pairs[:, 0:242:2], pairs[:, 1::2]), (pairs[:-1], pairs[1:])):
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert abs(float(r)) < 4 / math.sqrt(a.numel())


def test_stream_uniform_is_open_unit_interval():
    u = stream_uniform(batch_keys(5, 0, 4096), 3)
    assert u.dtype == torch.float64 and float(u.min()) > 0 and float(u.max()) < 1
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3


def test_draws_of_a_sample_do_not_depend_on_its_batch():
    keys = batch_keys(mix_seeds(1, 2), 0, 12)
    whole = draw_per_sample(EDM(), keys, (2, 4, 4), flip_p=0.5, drop_p=0.3)
    part = draw_per_sample(EDM(), keys[5:9], (2, 4, 4), flip_p=0.5, drop_p=0.3)
    torch.testing.assert_close(part.noise, whole.noise[5:9], rtol=0, atol=0)
    torch.testing.assert_close(part.t, whole.t[5:9], rtol=0, atol=0)
    assert torch.equal(part.flip, whole.flip[5:9])
    assert torch.equal(part.drop_label, whole.drop_label[5:9])


def test_draw_rates_and_edm_times():
    process = EDM()
    draws = draw_per_sample(process, batch_keys(3, 0, 20000), (1, 1, 1), flip_p=0.5, drop_p=0.1)
    assert abs(draws.flip.double().mean().item() - 0.5) < 0.015
    assert abs(draws.drop_label.double().mean().item() - 0.1) < 0.01
    log_sigma = draws.t.log()
    assert abs(log_sigma.mean().item() - process.p_mean) < 0.03
    assert abs(log_sigma.std().item() - process.p_std) < 0.03


@pytest.mark.parametrize(
    "process", [DiscreteVP(), CosineVP(), VE(), EDM(), RectifiedFlow(shift=3.0)], ids=repr
)
def test_time_quantile_is_monotone_and_in_range(process):
    u = torch.linspace(1e-9, 1 - 1e-9, 1001, dtype=torch.float64)
    t = process.t_from_uniform(u)
    assert t.dtype == torch.float64 and torch.all(t[1:] >= t[:-1])
    if isinstance(process, DiscreteVP):
        assert t[0] == 0 and t[-1] == process.num_timesteps - 1 and torch.equal(t, t.round())
    elif not isinstance(process, EDM):
        assert process.t_min - 1e-12 <= float(t.min()) and float(t.max()) <= process.t_max + 1e-12
