"""3x3 convolutions by Winograd's minimal filtering, F(4x4, 3x3), for CPU fp32 training and
sampling (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", sec. 4).

oneDNN's direct convolution already runs a CPU core near its FMA peak, so on CPU the only way
to make a conv-bound U-Net faster is to do fewer multiplications. Winograd's algorithm computes
each 4x4 output tile of a 3x3 convolution from a 6x6 input tile with 36 multiplications per
(input channel, output channel) pair instead of 144:

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A                       (Lavin & Gray, eq. 10)

Summed over input channels, the elementwise product becomes 36 independent matrix products
(tiles x C_in) @ (C_in x C_out), one per tile frequency; the input, kernel and output
transforms are small matrix products along the tile axes. The backward pass reuses the same
structure: the output transform transposed gives the gradient at each frequency, two batched
matrix products give the gradients of the transformed input and kernel, and the transposed
input and kernel transforms bring them back (overlapping input tiles add their gradients).

The result equals the direct convolution up to fp32 rounding (relative error ~1e-5; the
transforms' small integer coefficients keep it well conditioned, which is why F(4x4, 3x3) and
not a larger tile is used). Used only where it is measurably faster: CPU, fp32 (or fp64),
channels_last activations of at least 16x16 pixels and 32 channels, no autocast, not under
torch.compile (Inductor and cuDNN choose their own algorithms).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from diffuse.nets.layers import use_reference_kernels

__all__ = [
    "Conv3x3",
    "SavedInput",
    "conv3x3",
    "release_workspace",
    "winograd_applies",
    "winograd_conv3x3",
]

# F(4, 3) with interpolation points 0, +-1, +-2 and infinity (Lavin & Gray 2016, sec. 4.2).
_BT = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
]
_G = [
    [1 / 4, 0.0, 0.0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0.0, 0.0, 1.0],
]
_AT = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
]
_M, _N = 4, 6  # output tile, input tile

_MATRICES: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}


def _matrices(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(B^T, B, A^T, A, G2 = G kron G) on a device, built once per (device, dtype)."""
    key = (device, dtype)
    if key not in _MATRICES:
        bt = torch.tensor(_BT, dtype=torch.float64)
        at = torch.tensor(_AT, dtype=torch.float64)
        g = torch.tensor(_G, dtype=torch.float64)
        mats = (bt, bt.t(), at, at.t(), torch.kron(g, g))  # G2: (36, 9)
        _MATRICES[key] = tuple(m.to(device=device, dtype=dtype).contiguous() for m in mats)
    return _MATRICES[key]


def _kernel_transform(weight: Tensor, g2: Tensor, out: Tensor | None = None) -> Tensor:
    """U^T = (G g G^T) for every (out, in) pair: (K, C, 3, 3) -> (36, K, C)."""
    K, C = weight.shape[:2]
    if out is not None:
        out = out.view(_N * _N, K * C)
    return torch.mm(g2, weight.reshape(K * C, 9).t(), out=out).view(_N * _N, K, C)


def _fits(buf: Tensor | None, n: int, like: Tensor) -> bool:
    """Whether a scratch buffer can hold n elements for `like` (tensors made under
    torch.inference_mode cannot be written outside it, so that must match too)."""
    return (
        buf is not None
        and buf.numel() >= n
        and buf.dtype == like.dtype
        and buf.device == like.device
        and buf.is_inference() == torch.is_inference_mode_enabled()
    )


class _Workspace(threading.local):
    """Reusable scratch buffers, one per name and thread.

    Each Winograd call needs several tile-sized temporaries. Fresh allocations of that size
    come from glibc's mmap (or a freshly trimmed heap) and cost a page fault per 4 KiB on
    first touch, which measured ~8% of a CPU training step; reusing grown buffers avoids it.
    Only temporaries that die before the call returns live here.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, bool], Tensor] = {}
        self.pads: dict[tuple, Tensor] = {}

    def padded(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A zero-initialised buffer of exactly `shape`, one per shape: callers write only
        its inside, so the border written once stays zero."""
        key = (shape, like.dtype, like.device, torch.is_inference_mode_enabled())
        buf = self.pads.get(key)
        if buf is None:
            buf = self.pads[key] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return buf

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of `shape` with like's dtype and device."""
        n = 1
        for d in shape:
            n *= d
        key = (name, torch.is_inference_mode_enabled())
        buf = self.buffers.get(key)
        if not _fits(buf, n, like):
            buf = torch.empty(n, dtype=like.dtype, device=like.device)
            self.buffers[key] = buf
        return buf[:n].view(shape)


_WS = _Workspace()


def release_workspace() -> None:
    """Free this thread's Winograd scratch buffers (they are kept, grown to the largest layer
    seen, to avoid page faults on every call; with a large batch they hold hundreds of MB)."""
    _WS.buffers.clear()
    _WS.pads.clear()


def _along_both(mat: Tensor, t: Tensor, out: Tensor | None = None, name: str = "") -> Tensor:
    """Apply `mat` (r x s) along the two leading tile axes of t (s, s, R): (r, r, R).

    Two skinny matrix products (first axis, then second) instead of one with mat kron mat:
    6 + 6 instead of 36 multiply-adds per element.
    """
    s, r = t.shape[0], mat.shape[0]
    rest = t.numel() // (s * s)
    first = torch.mm(mat, t.reshape(s, -1), out=_WS.get(name + ".1", (r, s * rest), t))
    if out is None:
        out = _WS.get(name + ".2", (r, r, rest), t)
    return torch.matmul(mat, first.view(r, s, rest), out=out)  # contracts the second axis


class SavedInput:
    """Per-layer storage for a transformed tensor (input or kernel) between a training
    forward and backward.

    Keeping B^T d B for the backward pass saves recomputing it, but a fresh 2.25x-input
    allocation per layer and step page-faults (glibc returns such blocks to the system). A
    layer therefore reuses one buffer across steps. `token` identifies the forward call that
    wrote it: if the layer ran again before the backward (weight sharing, checkpointing),
    the backward sees another token and recomputes from the saved input instead.
    """

    def __init__(self) -> None:
        self.tensor: Tensor | None = None
        self.token = 0

    def claim(self, shape: tuple[int, ...], like: Tensor) -> tuple[Tensor, int]:
        """A (grown if needed) view of the buffer to write into, and the token of this write."""
        n = 1
        for d in shape:
            n *= d
        buf = self.tensor
        if not _fits(buf, n, like):
            buf = self.tensor = torch.empty(n, dtype=like.dtype, device=like.device)
        self.token += 1
        return buf[:n].view(shape), self.token

    def load(self, token: int, shape: tuple[int, ...]) -> Tensor | None:
        """The stored tensor if `token` is still the latest write, else None."""
        if self.tensor is None or token != self.token:
            return None
        n = 1
        for d in shape:
            n *= d
        return self.tensor[:n].view(shape)


def _input_transform(x: Tensor, nh: int, nw: int, out: Tensor | None = None) -> Tensor:
    """B^T d B for every 6x6 tile d of the zero-padded input: (B, C, H, W) -> (36, P, C),
    P = B * nh * nw tiles, in `out` or a workspace buffer (valid until the next call)."""
    bt = _matrices(x.device, x.dtype)[0]
    B, C, H, W = x.shape
    P = B * nh * nw
    hp, wp = _M * nh + 2, _M * nw + 2
    # Zero-padded input (B, hp, wp, C): a buffer per shape whose border stays zero, so only
    # the inside is written (one pass instead of F.pad's fill and copy).
    xp = _WS.padded((B, hp, wp, C), x)
    xp[:, 1 : H + 1, 1 : W + 1].copy_(x.permute(0, 2, 3, 1))
    sb, sh, sw, sc = xp.stride()
    # Overlapping 6x6 tiles at stride 4, tile axes first: (6, 6, B, nh, nw, C) -> (6, 6, P*C).
    tiles = xp.as_strided((_N, _N, B, nh, nw, C), (sh, sw, sb, _M * sh, _M * sw, sc))
    d = _WS.get("d", (_N, _N, P * C), x)
    d.view(tiles.shape).copy_(tiles)
    if out is not None:
        out = out.view(_N, _N, P * C)
    return _along_both(bt, d, out=out, name="v").view(_N * _N, P, C)


class _Winograd3x3(torch.autograd.Function):
    """conv2d(x, weight, bias, padding=1) for channels_last x, by F(4x4, 3x3)."""

    @staticmethod
    def forward(  # noqa: ANN001
        ctx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        ut: Tensor | None,
        saved: SavedInput | None,
        saved_kernel: SavedInput | None,
    ) -> Tensor:
        _, _, at, _, g2 = _matrices(x.device, x.dtype)
        B, C, H, W = x.shape
        K = weight.shape[0]
        nh, nw = -(-H // _M), -(-W // _M)
        P = B * nh * nw  # tiles
        # Keep the transformed input for the weight gradient, in the layer's reusable buffer
        # when there is one (x is kept too, to recompute it if that buffer was overwritten).
        ctx.saved, ctx.token, out = saved, None, None
        if saved is not None and weight.requires_grad:
            out, ctx.token = saved.claim((_N * _N, P, C), x)
        v = _input_transform(x, nh, nw, out=out)  # (36, P, C)
        # The transformed kernel, also needed by the backward pass: given (sampling cache),
        # or computed into the layer's reusable buffer (checked by token like the input).
        ctx.kernel, ctx.saved_kernel, ctx.ktoken = ut, saved_kernel, None
        if ut is None:
            kout = None
            if saved_kernel is not None:
                kout, ctx.ktoken = saved_kernel.claim((_N * _N, K, C), x)
            ut = _kernel_transform(weight, g2, out=kout)  # (36, K, C)
        m = torch.bmm(v, ut.transpose(1, 2), out=_WS.get("m", (_N * _N, P, K), x))  # per frequency
        y4 = _along_both(at, m.view(_N, _N, P * K), name="y")  # (4, 4, P*K): A^T M A
        # The output is allocated as a channels_last (B, K, H, W) tensor (not a view, so that
        # callers may update it in place) and filled through its (B, nh, 4, nw, 4, K) view.
        y = torch.empty(
            B,
            K,
            _M * nh,
            _M * nw,
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        dst = y.permute(0, 2, 3, 1).view(B, nh, _M, nw, _M, K)
        tile_view = y4.view(_M, _M, B, nh, nw, K).permute(2, 3, 0, 4, 1, 5)  # (B, nh, 4, nw, 4, K)
        if bias is None:
            dst.copy_(tile_view)
        else:
            torch.add(tile_view, bias, out=dst)
        if (_M * nh, _M * nw) != (H, W):
            y = y[:, :, :H, :W].contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x, weight)
        ctx.shape = (B, C, H, W, K, nh, nw)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        B, C, H, W, K, nh, nw = ctx.shape
        P = B * nh * nw
        _, b, _, a, g2 = _matrices(gy.device, gy.dtype)
        ut = ctx.kernel
        if ut is None and ctx.ktoken is not None:
            ut = ctx.saved_kernel.load(ctx.ktoken, (_N * _N, K, C))
        if ut is None:
            ut = _kernel_transform(weight, g2)
        g = gy.permute(0, 2, 3, 1)  # (B, H, W, K)
        if (_M * nh, _M * nw) != (H, W):
            g = F.pad(g, (0, 0, 0, _M * nw - W, 0, _M * nh - H))
        # Non-overlapping 4x4 output tiles, tile axes first: (4, 4, P*K).
        gt = _WS.get("gt", (_M, _M, P * K), gy)
        gt.view(_M, _M, B, nh, nw, K).copy_(
            g.reshape(B, nh, _M, nw, _M, K).permute(2, 4, 0, 1, 3, 5)
        )
        gm = _along_both(a, gt, name="gm").view(_N * _N, P, K)  # gradient at each frequency
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gv = torch.bmm(gm, ut, out=_WS.get("gv", (_N * _N, P, C), gy))  # (36, P, C)
            # (6, 6, P*C): per-tile input gradient
            gd = _along_both(b, gv.view(_N, _N, P * C), name="gd")
            # (B, nh, 6, nw, 6, C): tile rows/cols next to each other for the overlap-add.
            gd = gd.view(_N, _N, B, nh, nw, C).permute(2, 3, 0, 4, 1, 5)
            hp, wp = _M * nh + 2, _M * nw + 2
            # Tile rows 0-3 land on padded rows 4i..4i+3, rows 4-5 on 4i+4, 4i+5 (the next
            # tile's first rows); the same for columns. Two spare rows/cols keep the views even.
            gxp = _WS.get("gxp", (B, hp + 2, wp + 2, C), gy)
            gxp[:, _M * nh :].zero_()
            gxp[:, : _M * nh, _M * nw :].zero_()
            first = True
            for r0, r1, rs in ((0, 4, 0), (4, 6, 4)):
                for c0, c1, cs in ((0, 4, 0), (4, 6, 4)):
                    dst = gxp[:, rs : rs + _M * nh, cs : cs + _M * nw].view(B, nh, _M, nw, _M, C)
                    dst = dst[:, :, : r1 - r0, :, : c1 - c0]
                    if first:
                        dst.copy_(gd[:, :, r0:r1, :, c0:c1])
                        first = False
                    else:
                        dst += gd[:, :, r0:r1, :, c0:c1]
            gx = gxp[:, 1 : H + 1, 1 : W + 1].permute(0, 3, 1, 2)
            gx = gx.contiguous(memory_format=torch.channels_last)
        if ctx.needs_input_grad[1]:
            v = None
            if ctx.saved is not None and ctx.token is not None:
                v = ctx.saved.load(ctx.token, (_N * _N, P, C))
            if v is None:
                v = _input_transform(x, nh, nw)
            gut = torch.bmm(gm.transpose(1, 2), v)  # (36, K, C)
            # G2^T gU as (9, K*C), then one transposing copy: a wide product with 36-long
            # rows runs far faster than a (K*C, 36) @ (36, 9) one.
            gw = torch.mm(g2.t(), gut.view(_N * _N, K * C)).t().reshape(K, C, 3, 3)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None


def winograd_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether `conv3x3` takes the Winograd path for this input (see the module docstring)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype
        and x.dim() == 4
        and min(x.shape[1], weight.shape[0]) >= 96  # fewer channels: oneDNN direct is faster
        and x.shape[2] >= 16
        and x.shape[3] >= 16
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def winograd_conv3x3(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    kernel: Tensor | None = None,
    saved: SavedInput | None = None,
    saved_kernel: SavedInput | None = None,
) -> Tensor:
    """conv2d(x, weight, bias, padding=1) by Winograd F(4x4, 3x3).

    Args:
        x: (B, C, H, W), channels_last memory.
        weight: (K, C, 3, 3).
        bias: (K,) or None.
        kernel: the transformed kernel (36, K, C) if already computed (sampling cache).
        saved, saved_kernel: a layer's reusable buffers for the transformed input and kernel,
            kept for the backward pass (see SavedInput).
    Returns:
        (B, K, H, W), channels_last.
    """
    return _Winograd3x3.apply(x, weight, bias, kernel, saved, saved_kernel)


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A stride-1, padding-1 3x3 convolution, by Winograd where that is faster."""
    if winograd_applies(x, weight):
        return winograd_conv3x3(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=1)


class _LayerScratch:
    """A layer's buffers that are not model state: the saved transformed input between a
    training forward and backward, and the transformed kernel cached for sampling. Copies of
    the layer (EMA, copy.deepcopy) start with empty ones."""

    def __init__(self) -> None:
        self.saved = SavedInput()
        self.saved_kernel = SavedInput()
        self.kernel: tuple[tuple, Tensor] | None = None  # (weight key, (36, K, C))

    def __deepcopy__(self, memo: dict) -> _LayerScratch:
        return _LayerScratch()


class Conv3x3(nn.Conv2d):
    """nn.Conv2d(cin, cout, 3, padding=1) (same parameters and state dict) computed by
    `conv3x3`; when no gradient is recorded the transformed kernel is cached until the weight
    changes (its version counter moves on every in-place update, e.g. an optimiser step)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)
        self._scratch = _LayerScratch()

    def forward(self, x: Tensor) -> Tensor:
        """(B, cin, H, W) -> (B, cout, H, W)."""
        w = self.weight
        if use_reference_kernels() or not winograd_applies(x, w):
            return F.conv2d(x, w, self.bias, padding=1)
        scratch = self._scratch
        if torch.is_grad_enabled() and w.requires_grad:
            return winograd_conv3x3(
                x, w, self.bias, saved=scratch.saved, saved_kernel=scratch.saved_kernel
            )
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if scratch.kernel is None or scratch.kernel[0] != key:
            g2 = _matrices(w.device, w.dtype)[4]
            scratch.kernel = (key, _kernel_transform(w.detach(), g2))
        return winograd_conv3x3(x, w, self.bias, kernel=scratch.kernel[1])
