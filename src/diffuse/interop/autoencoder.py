"""diffusers' AutoencoderKL as diffuse's KL autoencoder codec (`codecs.autoencoder_kl`)."""

from __future__ import annotations

from typing import Any

from diffuse.codecs.autoencoder_kl import AutoencoderKLConfig
from diffuse.interop.folder import UnsupportedModelError
from diffuse.interop.weights import Rename, module_renames

__all__ = [
    "autoencoder_config_from_diffusers",
    "autoencoder_config_to_diffusers",
    "autoencoder_renames",
]


def autoencoder_config_from_diffusers(config: dict[str, Any], where: str) -> AutoencoderKLConfig:
    """The codec config of an AutoencoderKL config.json.

    Raises:
        UnsupportedModelError: block types, activations or per-channel latent statistics the
            codec does not reproduce (naming the key).
    """
    checks = {
        "act_fn": "silu",
        "down_block_types": "DownEncoderBlock2D",
        "up_block_types": "UpDecoderBlock2D",
    }
    for key, want in checks.items():
        value = config.get(key, want)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(v != want for v in values):
            raise UnsupportedModelError(f"{where}: {key}={value!r} is not supported (needs {want})")
    for key in ("latents_mean", "latents_std"):
        if config.get(key) is not None:
            raise UnsupportedModelError(
                f"{where}: {key} is not supported (per-channel latent statistics)"
            )
    try:
        return AutoencoderKLConfig(
            in_channels=int(config.get("in_channels", 3)),
            out_channels=int(config.get("out_channels", 3)),
            latent_channels=int(config.get("latent_channels", 4)),
            widths=tuple(config.get("block_out_channels", (64,))),
            layers_per_block=int(config.get("layers_per_block", 1)),
            num_groups=int(config.get("norm_num_groups", 32)),
            mid_attention=bool(config.get("mid_block_add_attention", True)),
            quant_conv=bool(config.get("use_quant_conv", True)),
            post_quant_conv=bool(config.get("use_post_quant_conv", True)),
            scaling_factor=float(config.get("scaling_factor", 0.18215)),
            shift_factor=float(config.get("shift_factor") or 0.0),
        )
    except ValueError as err:
        raise UnsupportedModelError(f"{where}: {err}") from None


def autoencoder_config_to_diffusers(cfg: AutoencoderKLConfig) -> dict[str, Any]:
    """The AutoencoderKL config.json of a codec (the inverse of
    `autoencoder_config_from_diffusers`; every codec config has one)."""
    levels = len(cfg.widths)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(cfg.widths),
        "layers_per_block": cfg.layers_per_block,
        "act_fn": "silu",
        "latent_channels": cfg.latent_channels,
        "norm_num_groups": cfg.num_groups,
        "scaling_factor": cfg.scaling_factor,
        "shift_factor": cfg.shift_factor or None,
        "latents_mean": None,
        "latents_std": None,
        "use_quant_conv": cfg.quant_conv,
        "use_post_quant_conv": cfg.post_quant_conv,
        "mid_block_add_attention": cfg.mid_attention,
    }


def _resnet(ours: str, theirs: str, cin: int, cout: int) -> list[Rename]:
    out = []
    for name in ("norm1", "conv1", "norm2", "conv2"):
        out += module_renames(f"{ours}.{name}", f"{theirs}.{name}")
    if cin != cout:
        out += module_renames(f"{ours}.skip", f"{theirs}.conv_shortcut")
    return out


def _middle(ours: str, theirs: str, ch: int, attention: bool) -> list[Rename]:
    out = _resnet(f"{ours}.res1", f"{theirs}.resnets.0", ch, ch)
    if attention:
        a = f"{theirs}.attentions.0"
        out += module_renames(f"{ours}.norm", f"{a}.group_norm")
        out += module_renames(f"{ours}.attn.qkv", tuple(f"{a}.to_{n}" for n in "qkv"), op="cat")
        out += module_renames(f"{ours}.attn.proj", f"{a}.to_out.0")
    return out + _resnet(f"{ours}.res2", f"{theirs}.resnets.1", ch, ch)


def autoencoder_renames(cfg: AutoencoderKLConfig) -> list[Rename]:
    """Every tensor of the codec and the AutoencoderKL tensor it comes from."""
    w, n = cfg.widths, len(cfg.widths)
    out = module_renames("encoder.conv_in", "encoder.conv_in")
    ch = w[0]
    for lv, width in enumerate(w):
        for k in range(cfg.layers_per_block):
            ours, theirs = f"encoder.levels.{lv}.res.{k}", f"encoder.down_blocks.{lv}.resnets.{k}"
            out += _resnet(ours, theirs, ch, width)
            ch = width
        if lv < n - 1:
            theirs = f"encoder.down_blocks.{lv}.downsamplers.0.conv"
            out += module_renames(f"encoder.levels.{lv}.resample", theirs)
    out += _middle("encoder.mid", "encoder.mid_block", ch, cfg.mid_attention)
    out += module_renames("encoder.norm_out", "encoder.conv_norm_out")
    out += module_renames("encoder.conv_out", "encoder.conv_out")
    out += module_renames("decoder.conv_in", "decoder.conv_in")
    out += _middle("decoder.mid", "decoder.mid_block", ch, cfg.mid_attention)
    for i, width in enumerate(w[::-1]):
        for k in range(cfg.layers_per_block + 1):
            ours, theirs = f"decoder.levels.{i}.res.{k}", f"decoder.up_blocks.{i}.resnets.{k}"
            out += _resnet(ours, theirs, ch, width)
            ch = width
        if i < n - 1:
            theirs = f"decoder.up_blocks.{i}.upsamplers.0.conv"
            out += module_renames(f"decoder.levels.{i}.resample", theirs)
    out += module_renames("decoder.norm_out", "decoder.conv_norm_out")
    out += module_renames("decoder.conv_out", "decoder.conv_out")
    if cfg.quant_conv:
        out += module_renames("quant", "quant_conv")
    if cfg.post_quant_conv:
        out += module_renames("post_quant", "post_quant_conv")
    return out
