"""U-Net: shapes per conditioning mode, zero-init, config and input errors, kernels, compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffuse.nets.layers import reference_kernels
from diffuse.nets.unet import PRESETS, AttentionBlock, ResBlock, UNet, UNetControl, unet_preset

from .conftest import randomize

TINY = unet_preset("unet-tiny")


def _net(**changes: object) -> UNet:
    return randomize(UNet(dataclasses.replace(TINY, **changes))).eval()


def _inputs(b: int = 2, c: int = 3, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, c, s, s), torch.rand(b) * 1000


def test_unconditional_shapes() -> None:
    net = _net()
    x, t = _inputs()
    assert net(x, t).shape == (2, 3, 16, 16)
    assert net(*_inputs(s=8)).shape == (2, 3, 8, 8)  # other sizes divisible by 2
    assert net(torch.randn(2, 3, 12, 20), t).shape == (2, 3, 12, 20)


def test_class_conditioning_and_null_class() -> None:
    net = _net(num_classes=5)
    x, t = _inputs()
    out = net(x, t, class_labels=torch.tensor([0, 4]))
    assert out.shape == (2, 3, 16, 16)
    assert not torch.allclose(out, net(x, t, class_labels=torch.tensor([1, 3])))
    # No labels means the null class (index num_classes), used for classifier-free guidance.
    torch.testing.assert_close(net(x, t), net(x, t, class_labels=torch.tensor([5, 5])))


def test_text_conditioning_with_mask_and_pooled() -> None:
    net = _net(context_dim=12, pooled_dim=6)
    x, t = _inputs()
    ctx, pooled = torch.randn(2, 7, 12), torch.randn(2, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 5:] = False
    out = net(x, t, context=ctx, context_mask=mask, pooled=pooled)
    assert out.shape == (2, 3, 16, 16)
    ctx2 = ctx.clone()
    ctx2[:, 5:] = 99.0  # masked tokens change nothing
    torch.testing.assert_close(net(x, t, context=ctx2, context_mask=mask, pooled=pooled), out)
    assert not torch.allclose(net(x, t, context=ctx, context_mask=mask), out)  # pooled matters
    assert net(x, t).shape == (2, 3, 16, 16)  # unconditional branch without text


def test_extra_input_channels_and_out_channels() -> None:
    net = _net(extra_in_channels=4, out_channels=6)
    x, t = _inputs(c=7)
    assert net(x, t).shape == (2, 6, 16, 16)


def test_control_residuals() -> None:
    net = _net()
    x, t = _inputs()
    base = net(x, t)
    cfg = net.config
    sizes = [16, 16, 8, 8]  # conv_in, level-0 block, downsample, level-1 block
    zeros = tuple(torch.zeros(2, c, s, s) for c, s in zip(cfg.skip_channels(), sizes))
    ctl = UNetControl(skips=zeros, mid=torch.zeros(2, 32, 8, 8))
    torch.testing.assert_close(net(x, t, control=ctl), base)
    ones = UNetControl(skips=tuple(torch.ones_like(z) for z in zeros), mid=None)
    assert not torch.allclose(net(x, t, control=ones), base)
    with pytest.raises(ValueError, match="4 skip residuals, got 2"):
        net(x, t, control=UNetControl(skips=zeros[:2]))


def test_zero_init() -> None:
    net = UNet(TINY).eval()
    x, t = _inputs()
    assert not net(x, t).any()  # zero output convolution
    block = next(m for m in net.modules() if isinstance(m, ResBlock))
    emb = torch.randn(2, block.emb.in_features)
    h = torch.randn(2, block.conv1.in_channels, 8, 8)
    skip = h if block.skip is None else block.skip(h)
    torch.testing.assert_close(block(h, emb), skip)  # residual branch is zero
    attn = next(m for m in net.modules() if isinstance(m, AttentionBlock))
    h = torch.randn(2, attn.norm.num_channels, 4, 4)
    torch.testing.assert_close(attn(h, None, None), h)  # attention branch is zero


def test_channels_last_and_reference_kernels_agree() -> None:
    net = _net().double()
    x, t = torch.randn(2, 3, 16, 16, dtype=torch.double), torch.rand(2) * 1000
    out = net(x, t)
    net.channels_last = False
    torch.testing.assert_close(net(x, t), out)
    with reference_kernels():
        torch.testing.assert_close(net(x, t), out)


def test_training_backward_and_dropout() -> None:
    net = randomize(UNet(dataclasses.replace(TINY, dropout=0.2))).train()
    x, t = _inputs()
    net(x, t).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p is not net.class_embed)
    a, b = net(x, t), net(x, t)
    assert not torch.allclose(a, b)  # dropout active in training
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(x, t))


def test_bf16_autocast() -> None:
    net = _net(num_classes=3, context_dim=8)
    x, t = _inputs()
    ctx = torch.randn(2, 4, 8)
    ref = net(x, t, class_labels=torch.tensor([0, 1]), context=ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, class_labels=torch.tensor([0, 1]), context=ctx)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"num_heads": 3, "head_channels": 0},
            "num_heads=3 does not divide the attention width 32",
        ),
        ({"head_channels": 24}, "head_channels=24 does not divide the attention width 32"),
        ({"num_groups": 6}, "num_groups=6 does not divide 16 channels"),
        ({"attention_levels": (2,)}, r"attention_levels \(2,\) has levels \[2\] outside 0..1"),
        ({"image_size": 15}, "image_size=15 is not divisible by 2"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"channel_mult": ()}, "channel_mult must be positive"),
    ],
)
def test_config_errors_show_values(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **changes)


def test_lists_become_tuples() -> None:
    cfg = dataclasses.replace(TINY, channel_mult=[1, 2], attention_levels=[1])
    assert cfg.channel_mult == (1, 2) and cfg == TINY


def test_wrong_conditioning_errors() -> None:
    net = _net()
    x, t = _inputs()
    with pytest.raises(ValueError, match="class_labels given to a U-Net without class"):
        net(x, t, class_labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="context given to a U-Net without text"):
        net(x, t, context=torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="pooled given"):
        net(x, t, pooled=torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*got \(2, 4, 16, 16\)"):
        net(torch.randn(2, 4, 16, 16), t)
    with pytest.raises(ValueError, match="divisible by 2, got 15x16"):
        net(torch.randn(2, 3, 15, 16), t)
    with pytest.raises(ValueError, match=r"c_noise must have shape \(2,\), got \(3,\)"):
        net(x, torch.rand(3))
    text = _net(context_dim=12)
    with pytest.raises(ValueError, match=r"context must have shape \(2, L, 12\), got \(2, 5, 10\)"):
        text(x, t, context=torch.randn(2, 5, 10))
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 5\), got \(2, 4\)"):
        text(x, t, context=torch.randn(2, 5, 12), context_mask=torch.ones(2, 4, dtype=torch.bool))
    cls = _net(num_classes=4)
    with pytest.raises(ValueError, match=r"class_labels must have shape \(2,\), got \(2, 1\)"):
        cls(x, t, class_labels=torch.zeros(2, 1, dtype=torch.long))


def test_preset_sizes() -> None:
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in UNet(c).parameters()) for n, c in PRESETS.items()}
    assert counts["unet-cifar"] == 35_746_307  # DDPM CIFAR-10 == google/ddpm-cifar10-32
    assert 2e6 <= counts["unet-s"] <= 5e6
    assert counts["unet-b"] > 100e6
    with pytest.raises(ValueError, match="unknown U-Net preset 'unet-x'"):
        unet_preset("unet-x")


def test_compile_fullgraph() -> None:
    net = _net(num_classes=3)
    x, t = _inputs()
    y = torch.tensor([0, 2])
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t, class_labels=y), net(x, t, class_labels=y))


@pytest.mark.slow
def test_compile_inductor() -> None:
    net = _net()
    x, t = _inputs()
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        out, ref = compiled(x, t), net(x, t)
    assert (out - ref).abs().max() <= 1e-3 * ref.abs().max()  # fp32 reassociation only
