"""Video DiT: 3-D patches, joint and factorised attention, frames independent at init in the
factorised form, clip-shape errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffuse.nets.dit import DiT, TemporalAttention, dit_preset
from diffuse.nets.layers import patchify_3d, unpatchify_3d

from .conftest import randomize

TINY = dit_preset("dit-tiny", num_classes=0, context_dim=12, frames=8, temporal_patch=2)


def _net(**changes: object) -> DiT:
    return DiT(dataclasses.replace(TINY, **changes)).eval()


def _clip(t: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(2, 4, t, 16, 16), torch.rand(2), torch.randn(2, 5, 12)


def test_patchify_3d_round_trip() -> None:
    x = torch.randn(2, 3, 4, 8, 6)
    tokens = patchify_3d(x, 2, 2)
    assert tokens.shape == (2, 2 * 4 * 3, 3 * 2 * 2 * 2)
    torch.testing.assert_close(unpatchify_3d(tokens, 2, 2, 2, 4, 3), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="2x2x2 does not divide the clip size 3x8x6"):
        patchify_3d(torch.randn(1, 3, 3, 8, 6), 2, 2)


@pytest.mark.parametrize("attention", ["joint", "factorised"])
@torch.no_grad()
def test_shapes_and_text(attention: str) -> None:
    net = randomize(_net(video_attention=attention))
    x, t, ctx = _clip()
    out = net(x, t, context=ctx)
    assert out.shape == (2, 4, 8, 16, 16)
    assert net(*_clip(t=4)[:2], context=ctx).shape == (2, 4, 4, 16, 16)  # shorter clips
    assert not torch.allclose(out, net(x, t, context=torch.randn(2, 5, 12)))


@torch.no_grad()
def test_factorised_frames_independent_at_init_then_mixed() -> None:
    net = randomize(_net(video_attention="factorised"))
    for layer in net.temporal:
        layer.attn.proj.weight.zero_()
        layer.attn.proj.bias.zero_()
    x, t, ctx = _clip()
    moved = x.clone()
    moved[:, :, 0] += 1.0  # frames 0-1 form the first temporal patch
    a, b = net(x, t, context=ctx), net(moved, t, context=ctx)
    torch.testing.assert_close(a[:, :, 7], b[:, :, 7], rtol=0, atol=0)
    for layer in net.modules():
        if isinstance(layer, TemporalAttention):
            layer.attn.proj.weight.normal_(std=0.2)
    a, b = net(x, t, context=ctx), net(moved, t, context=ctx)
    assert (a[:, :, 7] - b[:, :, 7]).abs().max() > 1e-4


@torch.no_grad()
def test_joint_attention_sees_the_whole_clip() -> None:
    net = randomize(_net(video_attention="joint"))
    x, t, ctx = _clip()
    moved = x.clone()
    moved[:, :, 0] += 1.0
    assert (net(x, t, context=ctx)[:, :, 7] - net(moved, t, context=ctx)[:, :, 7]).abs().max() > 0


def test_bad_clips_and_configs() -> None:
    net = _net()
    x, t, ctx = _clip()
    with pytest.raises(ValueError, match=r"\(B, 4, T, H, W\)"):
        net(x[:, :, 0], t, context=ctx)
    with pytest.raises(ValueError, match="1 to 8 frames"):
        net(torch.randn(2, 4, 10, 16, 16), t, context=ctx)
    with pytest.raises(ValueError, match="temporal_patch=2 does not divide T=3"):
        net(torch.randn(2, 4, 3, 16, 16), t, context=ctx)
    with pytest.raises(ValueError, match="context must have shape"):
        net(x, t, context=torch.randn(3, 5, 12))
    with pytest.raises(ValueError, match="temporal_patch=3 does not divide frames=8"):
        dataclasses.replace(TINY, temporal_patch=3)
    with pytest.raises(ValueError, match="video_attention"):
        dataclasses.replace(TINY, video_attention="sparse")
    with pytest.raises(ValueError, match="pos_embed"):
        dataclasses.replace(TINY, pos_embed="rope")
