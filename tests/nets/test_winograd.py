"""Winograd F(4x4, 3x3) convolution and the oneDNN linear route: same function as the textbook
operation, gradients included."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffuse.nets.layers import linear, reference_kernels
from diffuse.nets.unet import UNet, unet_preset
from diffuse.nets.winograd import (
    Conv3x3,
    conv3x3,
    release_workspace,
    winograd_applies,
    winograd_conv3x3,
)

from .conftest import randomize


def _cl(*shape: int, dtype: torch.dtype = torch.double) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).to(memory_format=torch.channels_last)


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (16, 20)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_equals_direct_convolution(size: tuple[int, int], with_bias: bool) -> None:
    x = _cl(2, 5, *size)
    w = torch.randn(6, 5, 3, 3, dtype=torch.double)
    b = torch.randn(6, dtype=torch.double) if with_bias else None
    y = winograd_conv3x3(x, w, b)
    assert y.shape == (2, 6, *size) and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, F.conv2d(x, w, b, padding=1))


def test_gradcheck() -> None:
    x = _cl(2, 3, 5, 6).requires_grad_()
    w = torch.randn(4, 3, 3, 3, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: winograd_conv3x3(x, w, b), (x, w, b))


def test_float32_error_is_small() -> None:
    x = _cl(2, 96, 16, 16, dtype=torch.float32).requires_grad_()
    conv = Conv3x3(96, 112)
    g = torch.randn(2, 112, 16, 16)
    assert winograd_applies(x, conv.weight)
    y = conv(x)
    y.backward(g)
    gx, gw = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None
    conv.weight.grad = None
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    ref.backward(g)
    for a, r in ((y, ref), (gx, x.grad), (gw, conv.weight.grad)):
        assert (a - r).abs().max() <= 1e-4 * r.abs().max()


def test_module_paths_give_the_same_gradients() -> None:
    conv = Conv3x3(96, 96).double()
    x1, x2 = _cl(2, 96, 16, 16).requires_grad_(), _cl(2, 96, 16, 16).requires_grad_()
    assert winograd_applies(x1, conv.weight)
    # Two calls before one backward: the second overwrites the layer's saved buffer, so the
    # first call's backward must notice and recompute.
    (conv(x1).square().sum() + conv(x2).sum()).backward()
    got = conv.weight.grad.clone()
    conv.weight.grad = None
    with reference_kernels():
        (conv(x1).square().sum() + conv(x2).sum()).backward()
    torch.testing.assert_close(got, conv.weight.grad)


def test_sampling_cache_follows_weight_updates() -> None:
    conv = Conv3x3(96, 96).double()
    x = _cl(1, 96, 16, 16)
    with torch.inference_mode():
        conv(x)
    with torch.no_grad():
        conv.weight.mul_(2.0)  # an optimiser or EMA update bumps the version counter
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))
    conv(x).sum().backward()  # training after inference-mode calls
    release_workspace()


def test_applies_only_where_faster() -> None:
    w = torch.randn(96, 96, 3, 3)
    assert winograd_applies(_cl(1, 96, 16, 16, dtype=torch.float32), w)
    assert not winograd_applies(torch.randn(1, 96, 16, 16), w)  # NCHW memory
    few = torch.randn(64, 64, 3, 3)  # < 96 channels: oneDNN's direct convolution is faster
    assert not winograd_applies(_cl(8, 64, 32, 32, dtype=torch.float32), few)
    assert not winograd_applies(_cl(1, 96, 8, 8, dtype=torch.float32), w)  # small image
    assert not winograd_applies(_cl(1, 3, 16, 16, dtype=torch.float32), torch.randn(96, 3, 3, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not winograd_applies(_cl(1, 96, 16, 16, dtype=torch.float32), w)
    x = torch.randn(1, 96, 8, 8)
    torch.testing.assert_close(conv3x3(x, w), F.conv2d(x, w, padding=1))


def test_unet_with_winograd_layers_matches_reference() -> None:
    cfg = dataclasses.replace(unet_preset("unet-tiny"), base_channels=96, num_groups=8)
    net = randomize(UNet(cfg)).double().train()
    x, t = torch.randn(2, 3, 16, 16, dtype=torch.double), torch.rand(2) * 1000
    assert winograd_applies(_cl(2, 96, 16, 16), net.down[0].res.conv1.weight)
    out = net(x, t)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with reference_kernels():
        ref = net(x, t)
        ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("shape", [(4, 8, 6), (3, 5, 6), (40, 6)])
def test_linear_route_equals_f_linear(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(7, 6, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    y = linear(x, w, b)
    ref = F.linear(x, w, b)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)


def test_deepcopy_starts_with_empty_scratch() -> None:
    import copy

    conv = Conv3x3(96, 96).double()
    x = _cl(1, 96, 16, 16)
    with torch.no_grad():
        conv(x)
    assert conv._scratch.kernel is not None
    twin = copy.deepcopy(conv)
    assert twin._scratch.kernel is None and twin._scratch.saved.tensor is None
    with torch.no_grad():
        torch.testing.assert_close(twin(x), conv(x))
