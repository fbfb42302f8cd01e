"""Guidance wrappers: one batched call, scale semantics, rescale and interval."""

import pytest
import torch

from diffuse.guidance import cfg, concat_cond


class LinearDenoiser:
    """D(x, level, cond) = x * a + cond offset; counts calls and batch sizes."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, x, level, cond):
        self.calls.append(x.shape[0])
        return 0.5 * x + cond["class_labels"].to(x.dtype).reshape(-1, 1)


def _inputs():
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cond = {"class_labels": torch.tensor([1, 2, 3])}
    uncond = {"class_labels": torch.tensor([10])}
    return x, cond, uncond


def test_cfg_is_one_batched_call_and_extrapolates():
    x, cond, uncond = _inputs()
    net = LinearDenoiser()
    out = cfg(net, cond, uncond, 3.0)(x, torch.tensor(1.0, dtype=torch.float64))
    assert net.calls == [6]
    d_c = 0.5 * x + torch.tensor([1.0, 2, 3]).reshape(-1, 1)
    d_u = 0.5 * x + 10
    torch.testing.assert_close(out, d_u + 3 * (d_c - d_u))


def test_scale_one_and_interval_use_the_conditional_model_alone():
    x, cond, uncond = _inputs()
    net = LinearDenoiser()
    cfg(net, cond, uncond, 1.0)(x, torch.tensor(2.0))
    guided = cfg(net, cond, uncond, 4.0, interval=(0.5, 1.5))
    outside = guided(x, torch.tensor(2.0))
    inside = guided(x, torch.tensor(1.0))
    assert net.calls == [3, 3, 6]
    torch.testing.assert_close(outside, 0.5 * x + torch.tensor([1.0, 2, 3]).reshape(-1, 1))
    assert not torch.allclose(inside, outside)


def test_rescale_zero_is_plain_cfg_and_one_matches_conditional_std():
    x, cond, uncond = _inputs()
    level = torch.tensor(1.5, dtype=torch.float64)
    plain = cfg(LinearDenoiser(), cond, uncond, 5.0)(x, level)
    zero = cfg(LinearDenoiser(), cond, uncond, 5.0, rescale=0.0)(x, level)
    torch.testing.assert_close(plain, zero)
    full = cfg(LinearDenoiser(), cond, uncond, 5.0, rescale=1.0)(x, level)
    d_c = 0.5 * x + torch.tensor([1.0, 2, 3]).reshape(-1, 1)
    eps_c = (x - d_c) / level
    eps_full = (x - full) / level
    torch.testing.assert_close(eps_full.std(dim=1), eps_c.std(dim=1))


def test_concat_cond_pads_token_sequences_with_mask():
    a = {"context": torch.ones(2, 5, 3)}
    b = {"context": torch.ones(2, 2, 3)}
    both = concat_cond(a, b)
    assert both["context"].shape == (4, 5, 3)
    assert both["context_mask"].tolist()[2] == [True, True, False, False, False]
    assert both["context_mask"][0].all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": -1.0}, "-1.0"),
        ({"scale": 2.0, "rescale": 1.5}, "1.5"),
        ({"scale": 2.0, "interval": (3.0, 1.0)}, r"\(3.0, 1.0\)"),
    ],
)
def test_bad_guidance_arguments(kwargs, match):
    _, cond, uncond = _inputs()
    with pytest.raises(ValueError, match=match):
        cfg(LinearDenoiser(), cond, uncond, **kwargs)


def test_mismatched_conditioning_keys():
    with pytest.raises(ValueError, match="class_labels"):
        concat_cond({"class_labels": torch.zeros(1)}, {"context": torch.zeros(1, 2, 3)})
