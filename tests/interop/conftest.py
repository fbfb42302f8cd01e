"""Tiny random-weight diffusers models, built with diffusers itself and saved with
`save_pretrained`: the folders the importer is checked against (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

PROMPT = "a red cat"
LATENT = 8  # latent side; the tiny VAE has factor 2, so images are 16 x 16


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_thread):
    """Tiny networks on a shared CPU: one thread (see tests/conftest.py)."""
    yield


@pytest.fixture(autouse=True)
def _conversion_cache(tmp_path, monkeypatch):
    """Converted diffusers folders go under the test's tmp_path, never ~/.cache."""
    monkeypatch.setenv("DIFFUSE_CACHE", str(tmp_path / "cache"))


def tiny_tokenizer() -> transformers.CLIPTokenizer:
    """A CLIP BPE tokenizer over lower-case letters and one merged word."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter + "</w>"] = len(vocab)
    vocab["re"], vocab["red</w>"] = len(vocab), len(vocab) + 1
    return transformers.CLIPTokenizer(
        vocab=vocab, merges=[("r", "e"), ("re", "d</w>")], model_max_length=77
    )


def tiny_text_encoder(vocab_size: int, hidden_size: int = 16) -> transformers.CLIPTextModel:
    config = transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return transformers.CLIPTextModel(config).eval()


def tiny_sd_unet(linear_projection: bool = False) -> diffusers.UNet2DConditionModel:
    """SD-1.x-shaped: cross-attention at the upper level and in the middle, a plain lowest
    level (SD 2.x-shaped with linear projections and a constant head width)."""
    return diffusers.UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=(2, 4) if linear_projection else 2,
        norm_num_groups=8,
        use_linear_projection=linear_projection,
    ).eval()


def tiny_vae() -> diffusers.AutoencoderKL:
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=2 * LATENT,
    ).eval()


def sd_scheduler(
    prediction_type: str = "epsilon", set_alpha_to_one: bool = True
) -> diffusers.DDIMScheduler:
    """Stable Diffusion's DDIM settings (scaled_linear, leading spacing, steps_offset 1); by
    default the last step goes to level 0 (set_alpha_to_one=True; SD 1.x's own configs say
    False: the last step stops at timestep 0's level)."""
    return diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=set_alpha_to_one,
        steps_offset=1,
        prediction_type=prediction_type,
        timestep_spacing="leading",
    )


def build_sd_folder(
    folder: Path,
    prediction_type: str = "epsilon",
    linear_projection: bool = False,
    set_alpha_to_one: bool = True,
) -> Path:
    """A whole StableDiffusionPipeline folder with tiny random weights."""
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    pipe = diffusers.StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=tiny_sd_unet(linear_projection),
        scheduler=sd_scheduler(prediction_type, set_alpha_to_one),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_unet2d() -> diffusers.UNet2DModel:
    """DDPM-style pixel U-Net (DDPM's [sin, cos] features with freq_shift 1)."""
    torch.manual_seed(1)
    return diffusers.UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=16,
        norm_num_groups=8,
        flip_sin_to_cos=False,
        freq_shift=1,
    ).eval()


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory) -> Path:
    return build_sd_folder(tmp_path_factory.mktemp("sd") / "pipeline")


@pytest.fixture(scope="session")
def sd_v_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sd-v") / "pipeline"
    return build_sd_folder(folder, "v_prediction", linear_projection=True)


@pytest.fixture(scope="session")
def ddpm_folder(tmp_path_factory) -> Path:
    """A DDPMPipeline folder (UNet2DModel + DDPMScheduler)."""
    folder = tmp_path_factory.mktemp("ddpm") / "pipeline"
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    diffusers.DDPMPipeline(unet=tiny_unet2d(), scheduler=scheduler).save_pretrained(folder)
    return folder


def tiny_dit(tie_embedders: bool = True) -> diffusers.DiTTransformer2DModel:
    """Class-conditional DiT with a learned-sigma output, as DiT-XL/2 is laid out. A converted
    DiT checkpoint holds the same timestep/class embedder in every block: tied here too."""
    torch.manual_seed(2)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=LATENT,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero starts at zero: make every path count
            p.add_(0.05 * torch.randn_like(p))
        if tie_embedders:
            first = model.transformer_blocks[0].norm1.emb
            for block in model.transformer_blocks[1:]:
                block.norm1.emb.load_state_dict(first.state_dict())
    return model


def tiny_pixart(cls_name: str = "PixArtTransformer2DModel", **overrides):
    """Text-conditioned PixArt-alpha layout (adaLN-single, caption projection) with a
    learned-sigma output; Transformer2DModel is the older class of the same network."""
    torch.manual_seed(8)
    options = dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=LATENT,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=12,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        activation_fn="gelu-approximate",
        attention_bias=True,
        num_embeds_ada_norm=1000,
    )
    model = getattr(diffusers, cls_name)(**(options | overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised layers too: make every path count
            p.add_(0.05 * torch.randn_like(p))
    return model
