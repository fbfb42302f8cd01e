"""Exported diffuse U-Nets load in diffusers and compute what the diffuse model computes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.interop.conftest import diffusers, tiny_dit, tiny_sd_unet, tiny_vae

from diffuse.config import DiscreteVPOptions, ProcessConfig
from diffuse.interop import (
    UnsupportedModelError,
    export_component,
    export_diffusers,
    import_diffusers,
)
from diffuse.interop.dit import dit_config_to_diffusers
from diffuse.interop.folder import find_components
from diffuse.interop.pipeline import import_codec, import_network
from diffuse.interop.unet import unet_config_to_diffusers
from diffuse.nets.dit import PRESETS as DIT_PRESETS
from diffuse.nets.dit import DiT, dit_preset
from diffuse.nets.unet import PRESETS as UNET_PRESETS
from diffuse.nets.unet import UNet, unet_preset

VP = ProcessConfig(kind="discrete_vp", parametrization="v", options=DiscreteVPOptions())


def _random_unet(**overrides) -> UNet:
    torch.manual_seed(4)
    net = UNet(unet_preset("unet-tiny", **overrides)).eval()
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialised branches too
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("scale_shift", [True, False])
def test_export_loads_in_diffusers_and_matches(tmp_path, scale_shift):
    net = _random_unet(scale_shift=scale_shift)
    folder = export_diffusers(net, VP, "trailing", tmp_path / "out")
    theirs = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.timestep_spacing == "trailing"
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
    assert isinstance(pipe.unet, diffusers.UNet2DModel)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([900.0, 12.0])
    with torch.no_grad():
        ours, out = net(x, t), theirs(x, t).sample
    assert (ours - out).abs().max().item() < 1e-5
    # and back: the import of the export is the same network
    back = import_diffusers(folder)
    got = back.net.config
    heads = {"num_heads": got.num_heads, "head_channels": got.head_channels}  # same layout
    assert got == dataclasses.replace(net.config, image_size=16, **heads)
    assert [got.heads_for(c) for c in got.attention_channels()] == [
        net.config.heads_for(c) for c in net.config.attention_channels()
    ]
    assert back.process.parametrization == "v"
    with torch.no_grad():
        assert (back.net(x, t) - ours).abs().max().item() < 1e-6


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"num_classes": 10}, "class-conditional"),
        ({"context_dim": 8}, "text-conditioned"),
        ({"extra_in_channels": 2}, "extra input channels"),
    ],
)
def test_export_refuses_unet_without_counterpart(tmp_path, overrides, reason):
    net = UNet(unet_preset("unet-tiny", **overrides))
    with pytest.raises(UnsupportedModelError, match=reason):
        export_diffusers(net, VP, "leading", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_continuous_process(tmp_path):
    edm = ProcessConfig(kind="edm", parametrization="edm")
    with pytest.raises(UnsupportedModelError, match="discrete_vp"):
        export_diffusers(UNet(unet_preset("unet-tiny")), edm, "karras", tmp_path / "out")


def test_export_refuses_to_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_diffusers(UNet(unet_preset("unet-tiny")), VP, "leading", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_dit_export_round_trip(tmp_path):
    """An imported DiT exports back to a DiTTransformer2DModel equal to the diffusers original
    (the eps half of its learned-sigma output)."""
    original = tiny_dit()
    original.save_pretrained(tmp_path / "transformer")
    imported = import_diffusers(tmp_path / "transformer")
    folder = export_diffusers(imported.net, VP, "leading", tmp_path / "out")
    exported = diffusers.DiTTransformer2DModel.from_pretrained(folder / "transformer").eval()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    t, labels = torch.tensor([700.0, 30.0]), torch.tensor([2, 10])
    with torch.no_grad():
        want = original(x, t, class_labels=labels).sample[:, :4]
        got = exported(x, t, class_labels=labels).sample
        assert (got - want).abs().max().item() < 1e-5
        assert (imported.net(x, t, class_labels=labels) - want).abs().max().item() < 1e-5


def test_dit_preset_without_counterpart_is_refused(tmp_path):
    net = DiT(dit_preset("dit-tiny", num_classes=10))
    with pytest.raises(UnsupportedModelError, match="freq_shift 1"):
        export_diffusers(net, VP, "leading", tmp_path / "out")


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():  # the zero-initialised layers too
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("linear_projection", [False, True])
def test_sd_unet_export_round_trip(tmp_path, linear_projection):
    """An SD-shaped U-Net (spatial transformers; 1x1-convolution or linear projections)
    imported, exported as a component and loaded by UNet2DConditionModel.from_pretrained
    computes what the original and the diffuse network compute."""
    torch.manual_seed(5)
    original = _perturbed(tiny_sd_unet(linear_projection))
    original.save_pretrained(tmp_path / "unet")
    net = import_network(find_components(tmp_path / "unet")[0])
    folder = export_component(net, tmp_path / "out")
    exported = diffusers.UNet2DConditionModel.from_pretrained(folder).eval()
    assert exported.config.use_linear_projection
    g = torch.Generator().manual_seed(6)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 7, 16, generator=g)
    t = torch.tensor([950.0, 3.0])
    with torch.no_grad():
        want = original(x, t, encoder_hidden_states=context).sample
        got = exported(x, t, encoder_hidden_states=context).sample
        assert (got - want).abs().max().item() < 1e-5
        assert (net(x, t, context=context) - want).abs().max().item() < 1e-5
    with pytest.raises(FileExistsError, match="overwrite"):
        export_component(net, folder)


def test_autoencoder_export_round_trip(tmp_path):
    """An imported AutoencoderKL exported as a component loads in diffusers and encodes and
    decodes as the original does (scaling factor included)."""
    torch.manual_seed(7)
    original = _perturbed(tiny_vae())
    original.register_to_config(scaling_factor=0.3)
    original.save_pretrained(tmp_path / "vae")
    codec = import_codec(find_components(tmp_path / "vae")[0])
    folder = export_component(codec, tmp_path / "out")
    exported = diffusers.AutoencoderKL.from_pretrained(folder).eval()
    assert exported.config.scaling_factor == 0.3
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1
    with torch.no_grad():
        for model in (original, exported):
            mean = model.encode(images).latent_dist.mean
            assert (exported.encode(images).latent_dist.mean - mean).abs().max() < 1e-5
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9))
        want = original.decode(latents).sample
        assert (exported.decode(latents).sample - want).abs().max().item() < 1e-5


def test_text_unet_pipeline_export_is_refused_with_the_reason(tmp_path):
    net = UNet(unet_preset("unet-tiny", context_dim=8, transformer_depth=1))
    with pytest.raises(UnsupportedModelError, match="export the U-Net as a component"):
        export_diffusers(net, VP, "leading", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"context_dim": 8, "transformer_depth": 1, "pooled_dim": 4}, "pooled text embedding"),
        ({"context_dim": 8, "transformer_depth": 1, "mid_attention": False}, "middle attention"),
        ({"num_classes": 10}, "class-conditional"),
    ],
)
def test_component_export_refuses_unet_without_counterpart(tmp_path, overrides, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        export_component(UNet(unet_preset("unet-tiny", **overrides)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_which_presets_export():
    """Every U-Net preset has a UNet2DModel config; every DiT preset is refused, naming DiT's
    noise embedding it lacks (as the README says)."""
    for name in UNET_PRESETS:
        assert unet_config_to_diffusers(unet_preset(name))["_class_name"] == "UNet2DModel"
    for name in DIT_PRESETS:
        with pytest.raises(UnsupportedModelError, match="original DiT noise embedding"):
            dit_config_to_diffusers(dit_preset(name, num_classes=10))
