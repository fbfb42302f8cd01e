"""Training-free inpainting: the known region comes back exactly from every sampler."""

from __future__ import annotations

import pytest
import torch

from diffuse.gaussian_mixture import GaussianMixture
from diffuse.samplers import SAMPLERS, SeededNoise, karras
from diffuse.samplers.inpaint import KnownRegion, check_mask, repaint


@pytest.fixture(scope="module")
def problem():
    """A 2x2 "image" mixture, a known clean sample, a mask generating its first column."""
    mixture = GaussianMixture.random(4, 3, seed=4, std_range=(0.2, 0.5))
    known = mixture.sample(3, torch.Generator().manual_seed(1)).reshape(3, 1, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).reshape(1, 1, 2, 2)

    def denoise(x, level):
        return mixture.denoise(x, level).reshape(x.shape)

    return denoise, known, mask


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_keeps_the_known_region(name, problem):
    denoise, known, mask = problem
    noise = SeededNoise([0, 1, 2], dtype=torch.float64)
    levels = karras(None, 6, level_min=0.02, level_max=10.0)
    eps = noise.initial(known.shape[1:])
    region = KnownRegion(known, mask, eps)
    out = SAMPLERS[name](denoise, known + 10.0 * eps, levels, noise=noise, callback=region)
    keep = mask.expand_as(known) == 0
    assert torch.equal(out[keep], known[keep])
    assert not torch.equal(out[~keep], known[~keep])  # the generated part was generated
    assert torch.isfinite(out).all()


def test_repaint_keeps_the_known_region_and_resamples(problem):
    denoise, known, mask = problem
    calls = 0

    def counting(x, level):
        nonlocal calls
        calls += 1
        return denoise(x, level)

    levels = karras(None, 5, level_min=0.02, level_max=10.0)
    noise = SeededNoise([0, 1, 2], dtype=torch.float64)
    eps = noise.initial(known.shape[1:])
    out = repaint(
        counting,
        known + 10 * eps,
        levels,
        region=KnownRegion(known, mask, eps),
        resample=3,
        noise=noise,
    )
    keep = mask.expand_as(known) == 0
    assert torch.equal(out[keep], known[keep])
    assert calls == 4 * 3 + 1  # three takes of every step but the last, which lands on D


def test_the_callback_chain_sees_every_step(problem):
    denoise, known, mask = problem
    seen = []
    levels = karras(None, 4, level_min=0.02, level_max=10.0)
    region = KnownRegion(
        known, mask, torch.zeros_like(known), then=lambda info: seen.append(info.index)
    )
    SAMPLERS["euler"](denoise, known + 10.0, levels, callback=region)
    assert seen == [0, 1, 2, 3]


def test_bad_masks_are_named():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1, got values \[0.0, 0.5\]"):
        check_mask(torch.tensor([0.0, 0.5]).repeat(8).reshape(1, 1, 4, 4), x)
    with pytest.raises(ValueError, match=r"mask of shape \(1, 1, 3, 3\) does not fit"):
        check_mask(torch.zeros(1, 1, 3, 3), x)
    with pytest.raises(ValueError, match="resample must be"):
        repaint(
            lambda x, l: x,
            x,
            karras(None, 2, level_min=0.1, level_max=1.0),
            region=KnownRegion(x, torch.ones(1, 1, 4, 4), x),
            resample=0,
        )
