"""Layers: embeddings, attention with masks, positions, patches and the upsampling kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffuse.nets.layers import (
    CrossAttention,
    GroupNorm,
    JointAttention,
    NoiseEmbedding,
    SelfAttention,
    apply_rope,
    constant_context,
    conv3x3_upsample2x,
    key_padding_mask,
    linear,
    modulate,
    patchify,
    reference_kernels,
    rope_2d,
    sincos_2d,
    sinusoidal_embedding,
    unpatchify,
    upsample_kernel,
    use_reference_kernels,
    zero_,
)


def test_sinusoidal_embedding_separates_both_input_ranges() -> None:
    # DDPM-style indices in [0, 1000] and EDM-style ln(sigma)/4 in [-2, 2] both give distinct
    # features for nearby levels.
    for lo, hi in ((500.0, 501.0), (0.10, 0.15), (-1.9, -1.85)):
        e = sinusoidal_embedding(torch.tensor([lo, hi]), 128)
        assert e.shape == (2, 128)
        assert (e[0] - e[1]).norm() > 0.05
    e = sinusoidal_embedding(torch.tensor([0.1]), 8, scale=100.0)
    assert torch.allclose(e, sinusoidal_embedding(torch.tensor([10.0]), 8))
    with pytest.raises(ValueError, match="dim=7"):
        sinusoidal_embedding(torch.zeros(1), 7)


def test_noise_embedding_shape_and_dtype() -> None:
    emb = NoiseEmbedding(32, 48)
    assert emb(torch.tensor([0.0, 999.0, -1.5])).shape == (3, 48)


def test_modulate() -> None:
    x, shift, scale = torch.randn(2, 5, 4), torch.randn(2, 1, 4), torch.randn(2, 1, 4)
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale) + shift)


def test_zero_() -> None:
    lin = zero_(torch.nn.Linear(3, 4))
    assert not lin.weight.any() and not lin.bias.any()


def test_self_attention_heads_must_divide_width() -> None:
    with pytest.raises(ValueError, match="width 10 .* heads=3"):
        SelfAttention(10, 3)
    with pytest.raises(ValueError, match="width 10 .* heads=4"):
        CrossAttention(10, 8, 4)


def test_self_attention_matches_manual_softmax() -> None:
    attn = SelfAttention(8, 2).double()
    x = torch.randn(2, 5, 8, dtype=torch.double)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (t.view(2, 5, 2, 4).transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # 1/sqrt(4)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x), ref)


def test_cross_attention_ignores_masked_tokens() -> None:
    attn = CrossAttention(8, 6, 2)
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 4:] = False
    out = attn(x, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[:, 4:] = torch.randn(2, 3, 6) * 100
    torch.testing.assert_close(attn(x, ctx2, mask), out)
    # Dropping the padding is the same as masking it.
    torch.testing.assert_close(attn(x, ctx[:, :4]), out)


def test_fully_masked_row_is_finite() -> None:
    attn = CrossAttention(8, 6, 2)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    assert torch.isfinite(attn(torch.randn(2, 5, 8), torch.randn(2, 7, 6), mask)).all()
    assert key_padding_mask(mask).all()


def test_joint_attention_shapes_and_mask() -> None:
    attn = JointAttention(16, 4)
    x, c = torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ox, oc = attn(x, c, mask)
    assert ox.shape == (2, 9, 16) and oc.shape == (2, 5, 16)
    c2 = c.clone()
    c2[0, 3:] = 50.0  # masked tokens of sample 0 cannot change the image stream
    torch.testing.assert_close(attn(x, c2, mask)[0][0], ox[0])
    last = JointAttention(16, 4, context_out=False)
    assert last(x, c)[1] is None


def test_rope_preserves_norm_and_is_relative() -> None:
    cos, sin = rope_2d(3, 4, 8)
    assert cos.shape == (12, 4)
    x = torch.randn(1, 2, 12, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    # q.k depends only on the offset: same vectors at tokens (0,0)-(1,1) and (1,2)-(2,3).
    q, k = torch.randn(8), torch.randn(8)
    qs = apply_rope(q.expand(1, 1, 12, 8), cos, sin)[0, 0]
    ks = apply_rope(k.expand(1, 1, 12, 8), cos, sin)[0, 0]
    a = qs[0] @ ks[1 * 4 + 1]
    b = qs[1 * 4 + 2] @ ks[2 * 4 + 3]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        rope_2d(2, 2, 6)


def test_sincos_2d() -> None:
    pos = sincos_2d(3, 5, 16)
    assert pos.shape == (15, 16)
    assert len({tuple(p.tolist()) for p in pos}) == 15
    with pytest.raises(ValueError, match="divisible by 4, got 10"):
        sincos_2d(2, 2, 10)


def test_patchify_round_trip_and_errors() -> None:
    x = torch.randn(2, 3, 8, 12)
    t = patchify(x, 4)
    assert t.shape == (2, 6, 48)
    torch.testing.assert_close(t[0, 1], x[0, :, 0:4, 4:8].reshape(-1))
    torch.testing.assert_close(unpatchify(t, 4, 2, 3), x)
    with pytest.raises(ValueError, match="patch size 3 does not divide the input size 8x12"):
        patchify(x[:, :, :, :], 3)


@pytest.mark.parametrize("size", [(4, 4), (5, 7)])
def test_upsample_conv_kernel_equals_nearest_then_conv(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size, dtype=torch.double)
    w, b = torch.randn(5, 3, 3, 3, dtype=torch.double), torch.randn(5, dtype=torch.double)
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)
    torch.testing.assert_close(conv3x3_upsample2x(x, w, b), ref)


def test_reference_kernels_context() -> None:
    assert not use_reference_kernels()
    with reference_kernels():
        assert use_reference_kernels()
    assert not use_reference_kernels()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(("k", "n"), [(64, 512), (256, 2048), (1024, 256), (320, 320)])
def test_linear_rows_do_not_depend_on_the_batch(k: int, n: int, grad: bool, threads: int) -> None:
    """A sample's rows give the same bits alone or at any place in a batch (sampling takes
    sgemm, training a 1x1 convolution; both pad the rows)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(k + n)
        w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
        for tokens in (1, 7, 77, 256):
            x = torch.randn(3 * tokens, k, generator=g)
            with torch.set_grad_enabled(grad):
                batch = linear(x, w.requires_grad_(grad), b)
                for j in range(3):
                    rows = slice(j * tokens, (j + 1) * tokens)
                    assert torch.equal(linear(x[rows], w, b), batch[rows]), (tokens, j)
            torch.testing.assert_close(batch, F.linear(x, w, b), rtol=1e-4, atol=1e-4)
            w = w.detach()
    finally:
        torch.set_num_threads(old)


def test_upsample_kernel_is_channels_last_and_equal() -> None:
    x = torch.randn(2, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, 4, 3, 3), torch.randn(3)
    kernel = upsample_kernel(w)
    assert kernel.is_contiguous(memory_format=torch.channels_last)
    ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)
    torch.testing.assert_close(conv3x3_upsample2x(x, w, b, kernel=kernel), ref)


def test_group_norm_channels_last_equals_contiguous() -> None:
    norm = GroupNorm(4, 16, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 16, 8, 8)
    cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # sampling: normalised in contiguous memory
        out = norm(cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.group_norm(x, 4, norm.weight, norm.bias, 1e-6))
    torch.testing.assert_close(norm(cl), out)  # training: PyTorch's own kernel


def test_cross_attention_reuses_keys_values_only_inside_a_constant_context() -> None:
    attn = CrossAttention(8, 6, 2)
    calls = []
    attn.kv.register_forward_hook(lambda *args: calls.append(1))
    x, context = torch.randn(2, 5, 8), torch.randn(2, 3, 6)
    with torch.no_grad():
        want = attn(x, context)
        attn(x, context)
        assert len(calls) == 2  # no scope: projected every call
        with constant_context():
            for _ in range(3):
                torch.testing.assert_close(attn(x, context), want, rtol=0, atol=0)
            assert len(calls) == 3  # once for the scope
            attn(x, context.clone())  # another tensor object: projected again
            assert len(calls) == 4
            attn.kv.weight.mul_(2)  # a weight change is seen
            assert not torch.equal(attn(x, context), want) and len(calls) == 5
        with constant_context():  # a new scope does not reuse the old one's projection
            attn(x, context)
            assert len(calls) == 6
    with constant_context():
        attn(x, context)  # a graph is recorded: never reused
        attn(x, context)
        assert len(calls) == 8


def test_sampling_cross_attention_never_sees_a_rows_padding() -> None:
    attn = CrossAttention(8, 6, 2)
    x, short, long = torch.randn(1, 5, 8), torch.randn(1, 3, 6), torch.randn(1, 7, 6)
    padded = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 4)), long])
    mask = torch.arange(7)[None] < torch.tensor([[3], [7]])
    with torch.no_grad():
        alone = [attn(x, short), attn(x, long)]
        batch = attn(x.expand(2, -1, -1), padded, mask)
        assert torch.equal(batch[:1], alone[0]) and torch.equal(batch[1:], alone[1])
        # a mask that keeps no prefix takes the masked kernel: the same up to rounding
        gaps = torch.zeros(1, 6, 6).index_copy(1, torch.tensor([0, 2, 4]), short)
        kept = torch.tensor([[True, False, True, False, True, False]])
        torch.testing.assert_close(attn(x, gaps, kept), alone[0])
    with torch.enable_grad():  # training keeps the masked kernel
        torch.testing.assert_close(attn(x.expand(2, -1, -1), padded, mask)[:1], alone[0])
