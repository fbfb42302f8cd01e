"""ControlNet: a fresh one leaves the base unchanged bit for bit; scale 0 and levels outside
the window are the base; the maps; loading next to the wrong base is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from diffuse.codecs.controls import control_map, edge_map, layout_map
from diffuse.nets.controlnet import ControlledUNet, ControlNet, ControlNetConfig
from diffuse.nets.unet import UNet, unet_preset
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import SHAPES, sample_split_scene


@pytest.fixture(scope="module")
def base() -> UNet:
    torch.manual_seed(0)
    cfg = unet_preset(
        "unet-tiny",
        base_channels=8,
        num_groups=4,
        head_channels=8,
        in_channels=4,
        out_channels=4,
        context_dim=8,
        pooled_dim=8,
    )
    net = UNet(cfg).eval()
    with torch.no_grad():  # a base that does something: perturb the zero-initialised layers
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def inputs(base: UNet, factor: int = 4, channels: int = 1):
    g = torch.Generator().manual_seed(1)
    s = base.config.image_size
    x = torch.randn(2, 4, s, s, generator=g)
    cond = {"context": torch.randn(2, 3, 8, generator=g), "pooled": torch.randn(2, 8, generator=g)}
    hint = (torch.rand(2, channels, s * factor, s * factor, generator=g) > 0.5).float()
    return x, torch.tensor([0.3, -0.2]), cond, hint


def test_fresh_controlnet_equals_the_base_bit_for_bit(base):
    control = ControlNet.from_base(base, ControlNetConfig("edges", 4, base.config))
    x, c_noise, cond, hint = inputs(base)
    with torch.no_grad():
        plain = base(x, c_noise, **cond)
        steered = ControlledUNet(base, control, scale=1.0)(x, c_noise, control=hint, **cond)
    assert torch.equal(plain, steered)
    # the encoder copy starts from the base's weights
    assert torch.equal(control.conv_in.weight, base.conv_in.weight)


def test_scale_zero_and_the_level_window_give_the_base(base):
    control = ControlNet.from_base(base, ControlNetConfig("edges", 4, base.config))
    with torch.no_grad():  # as if trained: the zero projections have moved
        for p in control.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, c_noise, cond, hint = inputs(base)
    with torch.no_grad():
        plain = base(x, c_noise, **cond)
        on = ControlledUNet(base, control, 1.0)(x, c_noise, control=hint, **cond)
        off = ControlledUNet(base, control, 0.0)(x, c_noise, control=hint, **cond)
        outside = ControlledUNet(base, control, 1.0, (0.5, 1.0))(x, c_noise, control=hint, **cond)
        half = ControlledUNet(base, control, 1.0, (0.0, 1.0))(x, c_noise, control=hint, **cond)
    assert not torch.equal(on, plain)
    assert torch.equal(off, plain)
    assert torch.equal(outside, plain)
    assert torch.equal(half[1], plain[1]) and torch.equal(half[0], on[0])  # per-sample window


def test_training_moves_only_the_controlnet(base):
    control = ControlNet.from_base(base, ControlNetConfig("layout", 4, base.config))
    net = ControlledUNet(base, control)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    x, c_noise, cond, hint = inputs(base, channels=4)
    target = torch.randn_like(x)
    losses = []
    for _ in range(5):
        loss = (net(x, c_noise, control=hint, **cond) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


def test_bad_configs_and_controls_are_named(base):
    with pytest.raises(ValueError, match="unknown control kind 'depth'; valid: edges, layout"):
        ControlNetConfig("depth", 4, base.config)
    with pytest.raises(ValueError, match="unknown control kind 'depth'"):
        control_map("depth", np.zeros((8, 8, 3), np.uint8))
    other = UNet(unet_preset("unet-tiny", base_channels=16, num_groups=4, head_channels=8))
    with pytest.raises(ValueError, match="differs from the base network's"):
        ControlNet.from_base(other, ControlNetConfig("edges", 4, base.config))
    control = ControlNet.from_base(base, ControlNetConfig("edges", 4, base.config))
    with pytest.raises(ValueError, match="another architecture"):
        ControlledUNet(other, control)
    x, c_noise, cond, hint = inputs(base, factor=2)
    with pytest.raises(
        ValueError,
        match=r"must be \(B, 1, 64, 64\) for a .edges. ControlNet, got \(2, 1, 32, 32\)",
    ):
        ControlledUNet(base, control)(x, c_noise, control=hint, **cond)


def test_every_object_has_edges_whatever_its_colour():
    """Edges come from every colour channel: an object as dark as its background (blue,
    purple...) still has an outline, and a smooth background has none."""
    for index in range(60):
        scene = sample_split_scene(7, index, "heldout")
        pixels = render_scene(scene, 64)
        edges = edge_map(pixels)[0]
        for obj in scene.objects:
            half = int(obj.extent * 32) + 2
            y, x = int(obj.cy * 64), int(obj.cx * 64)
            box = edges[max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1]
            assert box.sum() >= 8, (index, obj)
    background = render_scene(dataclasses.replace(scene, objects=()), 64)
    assert edge_map(background).sum() == 0


def test_maps_of_a_render():
    scene = sample_split_scene(7, 2, "heldout-2")
    pixels = render_scene(scene, 64)
    edges = edge_map(pixels)
    assert edges.shape == (1, 64, 64) and 0 < edges.mean() < 0.3
    layout = layout_map(pixels)
    assert layout.shape == (len(SHAPES), 64, 64)
    for obj in scene.objects:
        y, x = int(obj.cy * 64), int(obj.cx * 64)
        assert layout[SHAPES.index(obj.shape), y - 1 : y + 2, x - 1 : x + 2].any(), obj
