"""Video U-Net: inflation is exact, temporal layers see across frames, first-frame input,
frame conditioning, and errors on bad clips or configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffuse.nets.inflate import inflate, video_config
from diffuse.nets.temporal import TemporalBlock, fold_frames, unfold_frames
from diffuse.nets.unet import UNet, unet_preset

from .conftest import randomize

IMAGE = unet_preset("unet-tiny", context_dim=12, pooled_dim=6)


def _pair(**video: object) -> tuple[UNet, UNet]:
    """A trained-looking image U-Net and the video U-Net inflated from it."""
    image = randomize(UNet(IMAGE)).eval()
    net = UNet(video_config(IMAGE, max_frames=8, **video)).eval()
    inflate(image.state_dict(), IMAGE, net)
    return image, net


def _clip(b: int = 2, t: int = 8) -> dict[str, torch.Tensor]:
    return {
        "x": torch.randn(b, 3, t, 16, 16),
        "c_noise": torch.rand(b) * 2 - 1,
        "context": torch.randn(b, 5, 12),
        "pooled": torch.randn(b, 6),
    }


def _per_frame(image: UNet, clip: dict[str, torch.Tensor]) -> torch.Tensor:
    """The image network on every frame, frames folded into the batch as the video net does."""
    x, t = clip["x"], clip["x"].shape[2]
    out = image(
        fold_frames(x),
        clip["c_noise"].repeat_interleave(t),
        context=clip["context"].repeat_interleave(t, 0),
        pooled=clip["pooled"].repeat_interleave(t, 0),
    )
    return unfold_frames(out, t)


@torch.no_grad()
def test_inflated_network_is_the_image_network_frame_by_frame() -> None:
    image, video = _pair()
    clip = _clip()
    out = video(**clip)
    assert out.shape == (2, 3, 8, 16, 16)
    torch.testing.assert_close(out, _per_frame(image, clip), rtol=0, atol=1e-6)
    # Each frame alone through the image network (batch of one clip's frames) too.
    one = {k: v[:1] for k, v in clip.items()}
    for f in (0, 7):
        alone = image(
            one["x"][:, :, f], one["c_noise"], context=one["context"], pooled=one["pooled"]
        )
        torch.testing.assert_close(video(**one)[:, :, f], alone, rtol=0, atol=1e-5)


@torch.no_grad()
def test_inflated_first_frame_network_ignores_the_frame_at_init() -> None:
    image, video = _pair(first_frame=True)
    clip = _clip()
    start = torch.randn(2, 3, 16, 16)
    out = video(**clip, first_frame=start)
    torch.testing.assert_close(out, _per_frame(image, clip), rtol=0, atol=1e-6)
    randomize(video)
    assert not torch.allclose(video(**clip, first_frame=start), video(**clip))


@torch.no_grad()
def test_frames_are_independent_at_init_and_mixed_once_temporal_layers_are_on() -> None:
    _, video = _pair()
    clip = _clip(b=1)
    moved = {**clip, "x": clip["x"].clone()}
    moved["x"][:, :, 0] += 1.0  # change frame 0 only
    a, b = video(**clip), video(**moved)
    assert not torch.equal(a[:, :, 0], b[:, :, 0])
    torch.testing.assert_close(a[:, :, 7], b[:, :, 7], rtol=0, atol=0)  # frame 7 untouched
    # Turn the temporal output projections on (a training-free perturbation).
    g = torch.Generator().manual_seed(1)
    for m in video.modules():
        if isinstance(m, TemporalBlock):
            for p in (m.conv.weight, m.attn.proj.weight):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    a, b = video(**clip), video(**moved)
    assert (a[:, :, 7] - b[:, :, 7]).abs().max() > 1e-3  # frame 7 now sees frame 0


@torch.no_grad()
def test_one_frame_clip_is_the_image_network_even_when_trained() -> None:
    image, video = _pair()
    randomize(video, seed=3)
    for name, p in video.named_parameters():  # give the image parts back their weights
        if name in image.state_dict():
            p.copy_(image.state_dict()[name])
    with torch.no_grad():
        video.frame_embed.index.weight.zero_()  # frame index 0 embedding is then zero
        video.frame_embed.index.bias.zero_()
    clip = _clip(t=1)
    torch.testing.assert_close(video(**clip), _per_frame(image, clip), rtol=0, atol=1e-6)


@torch.no_grad()
def test_frame_index_and_rate_conditioning() -> None:
    _, video = _pair()
    clip = _clip()
    base = video(**clip)
    torch.testing.assert_close(video(**clip, fps=torch.tensor([8.0, 24.0])), base)  # zero init
    randomize(video.frame_embed, seed=5)
    with_rate = video(**clip, fps=torch.tensor([8.0, 24.0]))
    assert not torch.allclose(with_rate, video(**clip, fps=torch.tensor([12.0, 24.0])))
    # Identical frames come out different once the frame index is embedded.
    same = {**clip, "x": clip["x"][:, :, :1].expand(-1, -1, 8, -1, -1).contiguous()}
    out = video(**same)
    assert not torch.allclose(out[:, :, 0], out[:, :, 5])


def test_video_unet_trains_end_to_end() -> None:
    _, video = _pair(first_frame=True)
    video.train()
    clip = _clip(t=4)
    out = video(**clip, first_frame=torch.randn(2, 3, 16, 16), fps=torch.tensor([8.0, 8.0]))
    out.square().mean().backward()
    temporal = video.down[0].temporal
    assert temporal.attn.proj.weight.grad.abs().sum() > 0
    assert temporal.conv.weight.grad.abs().sum() > 0


def test_bad_clips_and_configs_fail_with_clear_messages() -> None:
    _, video = _pair(first_frame=True)
    clip = _clip()
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        video(torch.randn(2, 3, 16, 16), clip["c_noise"])
    with pytest.raises(ValueError, match="1 to 8 frames.*T=9"):
        video(torch.randn(2, 3, 9, 16, 16), clip["c_noise"])
    with pytest.raises(ValueError, match="c_noise"):
        video(clip["x"], torch.rand(3))
    with pytest.raises(ValueError, match="fps"):
        video(clip["x"], clip["c_noise"], fps=torch.ones(3))
    with pytest.raises(ValueError, match="first_frame must have shape"):
        video(clip["x"], clip["c_noise"], first_frame=torch.randn(2, 3, 8, 8))
    image = UNet(IMAGE)
    with pytest.raises(ValueError, match="video U-Nets"):
        image(torch.randn(1, 3, 16, 16), torch.rand(1), fps=torch.ones(1))
    with pytest.raises(ValueError, match="first_frame needs temporal"):
        dataclasses.replace(IMAGE, first_frame=True)
    with pytest.raises(ValueError, match="max_frames"):
        dataclasses.replace(IMAGE, temporal=True, max_frames=0)
    with pytest.raises(ValueError, match="temporal_kernel"):
        dataclasses.replace(IMAGE, temporal=True, temporal_kernel=2)
    with pytest.raises(ValueError, match="base_channels: 16 there, 32 here"):
        other = UNet(video_config(dataclasses.replace(IMAGE, base_channels=32)))
        inflate(image.state_dict(), IMAGE, other)
    with pytest.raises(ValueError, match="changes only"):
        video_config(IMAGE, base_channels=8)


def test_image_network_state_dict_unchanged_by_video_support() -> None:
    """Image U-Nets hold no temporal parameters (shipped weight files keep loading)."""
    keys = UNet(IMAGE).state_dict().keys()
    assert not [k for k in keys if "temporal" in k or k.startswith("frame_embed")]


def test_info_for_clip_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    from diffuse.cli import main
    from diffuse.nets.flops import network_info

    image = network_info(IMAGE, batch=1)
    clip = network_info(IMAGE, batch=1, frames=8)
    assert clip.frames == 8 and clip.params > image.params
    assert 8 * image.gflops < clip.gflops < 12 * image.gflops  # frames plus temporal layers
    assert main(["info", "dit-tiny", "--frames", "8", "--batch", "1"]) == 0
    assert "input 8 frames x 4x16x16" in capsys.readouterr().out
    assert main(["info", "unet-tiny", "--frames", "0"]) == 2
    assert "--frames must be >= 1, got 0" in capsys.readouterr().err
