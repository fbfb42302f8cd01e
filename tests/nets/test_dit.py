"""DiT: shapes per conditioning mode, adaLN-Zero init, config and input errors, compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffuse.nets.dit import PRESETS, DiT, DiTBlock, DiTControl, JointBlock, dit_preset

from .conftest import randomize

TINY = dit_preset("dit-tiny")


def _net(**changes: object) -> DiT:
    return randomize(DiT(dataclasses.replace(TINY, **changes))).eval()


def _inputs(b: int = 2, c: int = 4, s: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, c, s, s), torch.rand(b) * 1000


def test_class_conditioning_and_null_class() -> None:
    net = _net()
    x, t = _inputs()
    out = net(x, t, class_labels=torch.tensor([0, 9]))
    assert out.shape == (2, 4, 16, 16)
    assert not torch.allclose(out, net(x, t, class_labels=torch.tensor([1, 2])))
    torch.testing.assert_close(net(x, t), net(x, t, class_labels=torch.tensor([10, 10])))


def test_unconditional_and_other_sizes() -> None:
    net = _net(num_classes=0)
    x, t = _inputs()
    assert net(x, t).shape == (2, 4, 16, 16)
    assert net(torch.randn(2, 4, 8, 12), t).shape == (2, 4, 8, 12)  # sin-cos table recomputed


@pytest.mark.parametrize("mode", ["cross", "joint"])
@pytest.mark.parametrize("pos", ["sincos", "rope"])
def test_text_conditioning(mode: str, pos: str) -> None:
    net = _net(context_dim=12, pooled_dim=6, text_mode=mode, pos_embed=pos, qk_norm=True)
    x, t = _inputs()
    ctx, pooled = torch.randn(2, 7, 12), torch.randn(2, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    out = net(
        x, t, context=ctx, context_mask=mask, pooled=pooled, class_labels=torch.tensor([1, 2])
    )
    assert out.shape == (2, 4, 16, 16)
    ctx2 = ctx.clone()
    ctx2[0, 4:] = 42.0  # masked tokens change nothing
    out2 = net(
        x, t, context=ctx2, context_mask=mask, pooled=pooled, class_labels=torch.tensor([1, 2])
    )
    torch.testing.assert_close(out2, out)
    assert net(torch.randn(2, 4, 8, 12), t, context=ctx).shape == (2, 4, 8, 12)


def test_joint_blocks_structure() -> None:
    net = DiT(dataclasses.replace(TINY, context_dim=12, text_mode="joint"))
    assert all(isinstance(b, JointBlock) for b in net.blocks)
    assert net.blocks[-1].c_mlp is None and net.blocks[0].c_mlp is not None
    with pytest.raises(ValueError, match="joint-attention DiT needs context"):
        net(*_inputs())


def test_extra_channels_and_control() -> None:
    net = _net(extra_in_channels=3, out_channels=8)
    x, t = _inputs(c=7)
    base = net(x, t)
    assert base.shape == (2, 8, 16, 16)
    zero = DiTControl(blocks=(torch.zeros(2, 64, 64),))
    torch.testing.assert_close(net(x, t, control=zero), base)
    one = DiTControl(blocks=(torch.ones(2, 64, 64), torch.ones(2, 64, 64)))
    assert not torch.allclose(net(x, t, control=one), base)
    with pytest.raises(ValueError, match="at most 2 residuals, got 3"):
        net(x, t, control=DiTControl(blocks=(zero.blocks[0],) * 3))


def test_adaln_zero_init() -> None:
    net = DiT(dataclasses.replace(TINY, context_dim=8)).eval()
    x, t = _inputs()
    assert not net(x, t, class_labels=torch.tensor([1, 2])).any()  # zero final layer
    block = next(m for m in net.modules() if isinstance(m, DiTBlock))
    tokens, c = torch.randn(2, 64, 64), torch.randn(2, 64)
    ctx = torch.randn(2, 3, 8)
    torch.testing.assert_close(block(tokens, c, ctx), tokens)  # every gate and cross proj is 0
    joint = DiT(dataclasses.replace(TINY, context_dim=8, text_mode="joint")).blocks[0]
    ctx = torch.randn(2, 3, 64)
    out, out_ctx = joint(tokens, c, ctx)
    torch.testing.assert_close(out, tokens)
    torch.testing.assert_close(out_ctx, ctx)


def test_backward_and_bf16_autocast() -> None:
    net = _net(context_dim=8).train()
    x, t = _inputs()
    ctx = torch.randn(2, 3, 8)
    ref = net(x, t, context=ctx)
    ref.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, context=ctx)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_heads": 5}, "num_heads=5 does not divide hidden_size=64"),
        ({"patch_size": 3}, "patch_size=3 does not divide image_size=16"),
        ({"hidden_size": 66, "num_heads": 6}, "hidden_size divisible by 4, got 66"),
        ({"pos_embed": "rope", "hidden_size": 72, "num_heads": 4}, "head size divisible by 4"),
        ({"text_mode": "concat"}, "text_mode must be 'cross' or 'joint', got 'concat'"),
        ({"depth": 0}, "depth must be >= 1, got 0"),
    ],
)
def test_config_errors_show_values(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **changes)


def test_wrong_inputs_errors() -> None:
    net = _net()
    x, t = _inputs()
    with pytest.raises(ValueError, match="patch size 2 does not divide the input size 15x16"):
        net(torch.randn(2, 4, 15, 16), t)
    with pytest.raises(ValueError, match="context given to a DiT without text"):
        net(x, t, context=torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\).*got \(2, 3, 16, 16\)"):
        net(torch.randn(2, 3, 16, 16), t)
    uncond = _net(num_classes=0)
    with pytest.raises(
        ValueError, match=r"class_labels given to a DiT without class .*num_classes=0"
    ):
        uncond(x, t, class_labels=torch.tensor([1, 2]))
    text = _net(context_dim=12)
    with pytest.raises(ValueError, match=r"context must have shape \(2, L, 12\), got \(2, 5, 16\)"):
        text(x, t, context=torch.randn(2, 5, 16))


def test_preset_sizes_match_published() -> None:
    # Peebles & Xie 2023, table 1 (parameters with learned sigma; ours predict 4 channels).
    published = {"dit-s/2": 33.0e6, "dit-b/2": 130.3e6, "dit-l/2": 458.0e6, "dit-xl/2": 675.1e6}
    shapes = {"dit-s/2": (12, 384, 6), "dit-b/2": (12, 768, 12), "dit-l/2": (24, 1024, 16)}
    shapes["dit-xl/2"] = (28, 1152, 16)
    with torch.device("meta"):
        for name, ref in published.items():
            cfg = PRESETS[name]
            assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (*shapes[name], 2)
            n = sum(p.numel() for p in DiT(cfg).parameters())
            assert abs(n / ref - 1) < 0.01, (name, n)


def test_compile_fullgraph() -> None:
    for changes in ({}, {"context_dim": 8, "text_mode": "joint", "pos_embed": "rope"}):
        net = _net(**changes)
        x, t = _inputs()
        cond = (
            {"context": torch.randn(2, 3, 8)} if changes else {"class_labels": torch.tensor([1, 2])}
        )
        compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            # Compiled graphs use F.linear, eager CPU the oneDNN row path: summation order differs.
            torch.testing.assert_close(
                compiled(x, t, **cond), net(x, t, **cond), atol=2e-4, rtol=1e-3
            )


@pytest.mark.slow
def test_compile_inductor() -> None:
    net = _net()
    x, t = _inputs()
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        out, ref = compiled(x, t), net(x, t)
    assert (out - ref).abs().max() <= 1e-3 * ref.abs().max()  # fp32 reassociation only
