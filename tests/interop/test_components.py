"""Every imported component computes what the diffusers original computes (fp32, 1e-5)."""

from __future__ import annotations

import pytest
import torch
from tests.interop.conftest import diffusers, tiny_dit, tiny_pixart, tiny_unet2d

from diffuse.interop import UnsupportedModelError
from diffuse.interop.folder import find_components
from diffuse.interop.pipeline import import_codec, import_diffusers, import_network

TOL = 1e-5


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    err = (ours - theirs).abs().max().item()
    assert err <= TOL * max(1.0, theirs.abs().max().item()), err


@pytest.mark.parametrize("fixture", ["sd_folder", "sd_v_folder"])
def test_sd_unet_matches(fixture, request):
    folder = request.getfixturevalue(fixture)
    theirs = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    ours = import_diffusers(folder).net
    assert ours.config.transformer_depth == 1 and ours.config.context_dim == 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([981.0, 21.0])
    context = torch.randn(2, 77, 16, generator=g)
    with torch.no_grad():
        _close(ours(x, t, context=context), theirs(x, t, encoder_hidden_states=context).sample)


def test_unet2d_matches(tmp_path):
    model = tiny_unet2d()
    model.save_pretrained(tmp_path / "unet")
    (component,) = find_components(tmp_path / "unet")
    ours = import_network(component)
    assert ours.config.sin_first and ours.config.freq_shift == 1
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999.0, 3.0])
    with torch.no_grad():
        _close(ours(x, t), model(x, t).sample)


def test_unet_cifar_preset_is_unet2d_of_ddpm_cifar_config():
    """The `unet-cifar` preset has exactly the parameters of UNet2DModel's DDPM CIFAR-10
    config (google/ddpm-cifar10-32's layout), tensor for tensor."""
    from diffuse.interop.unet import unet_config_from_diffusers, unet_renames
    from diffuse.nets.unet import unet_preset

    config = dict(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=None,
        norm_eps=1e-6,
        in_channels=3,
        out_channels=3,
    )
    model = diffusers.UNet2DModel(**config)
    cfg, _ = unet_config_from_diffusers(dict(model.config), "UNet2DModel", "cifar")
    preset = unet_preset("unet-cifar", dropout=0.0, freq_shift=0.0)
    assert cfg == preset
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {k for r in unet_renames(cfg) for k in r.theirs}
    assert mapped == set(theirs)


def test_autoencoder_matches(sd_folder):
    theirs = diffusers.AutoencoderKL.from_pretrained(sd_folder / "vae").eval()
    ours = import_codec(next(c for c in find_components(sd_folder) if c.name == "vae"))
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    latents = torch.randn(2, 4, 8, 8, generator=g)
    scale = theirs.config.scaling_factor
    with torch.no_grad():
        _close(ours.encode(images), theirs.encode(images).latent_dist.mean * scale)
        _close(ours.decode(latents), theirs.decode(latents / scale).sample)


def test_text_encoder_matches_pipeline_prompt_embeddings(sd_folder):
    """The imported text path gives the prompt embeddings StableDiffusionPipeline computes."""
    from diffuse.pipelines.text_to_image import load_pipeline

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(sd_folder)
    theirs, _ = pipe.encode_prompt("a red cat", "cpu", 1, False)
    ours = load_pipeline(sd_folder).conditioning(["a red cat"])
    assert set(ours) == {"context"}  # all 77 positions attended: no mask is needed
    _close(ours["context"], theirs)


def test_dit_matches(tmp_path):
    model = tiny_dit()
    model.save_pretrained(tmp_path / "transformer")
    ours = import_diffusers(tmp_path / "transformer").net
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([999.0, 500.0, 1.0])
    labels = torch.tensor([0, 7, 10])  # 10: the null class of classifier-free guidance
    with torch.no_grad():
        theirs = model(x, t, class_labels=labels).sample[:, :4]  # the eps half of learned sigma
        _close(ours(x, t, class_labels=labels), theirs)


def test_dit_with_differing_block_embedders_is_refused(tmp_path):
    tiny_dit(tie_embedders=False).save_pretrained(tmp_path / "transformer")
    with pytest.raises(UnsupportedModelError, match="embedder differs"):
        import_diffusers(tmp_path / "transformer")


@pytest.mark.parametrize(
    ("cls_name", "overrides"),
    [
        ("PixArtTransformer2DModel", {}),
        ("Transformer2DModel", {}),
        ("PixArtTransformer2DModel", {"interpolation_scale": 2}),
    ],
)
def test_pixart_transformer_matches(tmp_path, cls_name, overrides):
    """PixArt's text-conditioned transformer (adaLN-single, caption projection, no norm before
    the cross-attention) equals diffuse's DiT in its PixArt layout, with a padding mask."""
    model = tiny_pixart(cls_name, **overrides)
    model.save_pretrained(tmp_path / "transformer")
    ours = import_network(find_components(tmp_path / "transformer")[0])
    cfg = ours.config
    assert (cfg.adaln, cfg.cross_norm, cfg.context_mlp, cfg.context_dim) == (
        "single",
        False,
        True,
        12,
    )
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([999.0, 500.0, 1.0])
    context = torch.randn(3, 5, 12, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    extra = {"resolution": None, "aspect_ratio": None}
    with torch.no_grad():
        theirs = model(
            x, encoder_hidden_states=context, encoder_attention_mask=mask, timestep=t,
            added_cond_kwargs=extra,
        ).sample[:, :4]  # fmt: skip
        _close(ours(x, t, context=context, context_mask=mask.bool()), theirs)


def test_class_conditional_transformer2d_is_imported_as_dit(tmp_path):
    """A Transformer2DModel in DiT's layout (ada_norm_zero, class labels) is the DiT import."""
    torch.manual_seed(2)
    model = diffusers.Transformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
        norm_type="ada_norm_zero", norm_elementwise_affine=False,
        activation_fn="gelu-approximate", attention_bias=True,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        first = model.transformer_blocks[0].norm1.emb
        for block in model.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(first.state_dict())
    model.save_pretrained(tmp_path / "transformer")
    ours = import_diffusers(tmp_path / "transformer").net
    assert ours.config.adaln == "zero" and ours.config.num_classes == 10
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t, labels = torch.tensor([900.0, 20.0]), torch.tensor([3, 10])
    with torch.no_grad():
        theirs = model(x, timestep=t, class_labels=labels).sample[:, :4]
        _close(ours(x, t, class_labels=labels), theirs)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sample_size": 128}, "use_additional_conditions"),
        ({"use_additional_conditions": True}, "use_additional_conditions"),
    ],
)
def test_pixart_without_counterpart_is_refused(tmp_path, overrides, match):
    tiny_pixart(**overrides).save_pretrained(tmp_path / "transformer")
    with pytest.raises(UnsupportedModelError, match=match):
        import_network(find_components(tmp_path / "transformer")[0])
