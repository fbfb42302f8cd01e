"""diffusers' UNet2DModel and UNet2DConditionModel as diffuse U-Nets (`nets.unet`).

Both have the layout of diffuse's U-Net: a 3x3 input convolution, per level `layers_per_block`
residual blocks (each optionally followed by an attention block) and a stride-2 convolution,
a middle block (residual, attention, residual), per level `layers_per_block + 1` residual
blocks over the concatenated skip connections with nearest-upsampling convolutions, and
GroupNorm-SiLU-conv out. UNet2DModel's attention is the DDPM block (`UNet.AttentionBlock`);
UNet2DConditionModel's is Stable Diffusion's spatial transformer
(`nets.spatial_transformer`), which a config with `transformer_depth > 0` selects.

Configs that do not fit (other block types, class or added embeddings, per-level head layouts
that are neither a constant head count nor a constant head width, ...) are refused with the
offending key.
"""

from __future__ import annotations

from typing import Any

from diffuse.interop.folder import UnsupportedModelError
from diffuse.interop.weights import Rename, module_renames
from diffuse.nets.unet import UNetConfig

__all__ = ["unet_config_from_diffusers", "unet_config_to_diffusers", "unet_renames"]

_ATTENTION = {
    "UNet2DModel": ("AttnDownBlock2D", "AttnUpBlock2D", "UNetMidBlock2D"),
    "UNet2DConditionModel": (
        "CrossAttnDownBlock2D",
        "CrossAttnUpBlock2D",
        "UNetMidBlock2DCrossAttn",
    ),
}
# Keys whose value must be this (or absent) for the network to be diffuse's U-Net.
_FIXED: dict[str, Any] = {
    "act_fn": "silu",
    "center_input_sample": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "mid_block_scale_factor": 1,
    "resnet_out_scale_factor": 1.0,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "addition_embed_type": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None,
    "timestep_post_act": None,
    "time_embedding_act_fn": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
    "resnet_skip_time_act": False,
    "reverse_transformer_layers_per_block": None,
    "projection_class_embeddings_input_dim": None,
}


def _refuse(where: str, key: str, value: Any, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{where}: {key}={value!r} is not supported ({why})")


def _heads(value: Any, widths: list[int], levels: list[int], where: str) -> dict[str, int]:
    """diffuse's num_heads or head_channels from a per-level (or global) head count."""
    counts = list(value) if isinstance(value, (list, tuple)) else [value] * len(widths)
    pairs = [(widths[lv], int(counts[lv])) for lv in levels]
    if len({h for _, h in pairs}) == 1:
        return {"num_heads": pairs[0][1], "head_channels": 0}
    if all(w % h == 0 for w, h in pairs) and len({w // h for w, h in pairs}) == 1:
        return {"num_heads": 1, "head_channels": pairs[0][0] // pairs[0][1]}
    raise _refuse(
        where,
        "attention heads",
        value,
        "diffuse needs the same head count or the same head width at every attention level",
    )


def unet_config_from_diffusers(
    config: dict[str, Any], class_name: str, where: str
) -> tuple[UNetConfig, bool]:
    """The diffuse U-Net config of a diffusers U-Net config.

    Args:
        config: the component's config.json.
        class_name: "UNet2DModel" or "UNet2DConditionModel".
        where: the config file, for messages.
    Returns:
        (config, linear_projection): the second says whether the spatial transformers project
        with linear maps (Stable Diffusion 2.x) or 1x1 convolutions (1.x), which decides the
        shape of their weights.
    Raises:
        UnsupportedModelError: a key whose value diffuse's U-Net cannot reproduce.
    """
    for key, want in _FIXED.items():
        if config.get(key, want) != want:
            raise _refuse(where, key, config[key], f"diffuse's U-Net needs {want!r}")
    conditional = class_name == "UNet2DConditionModel"
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    widths = [int(c) for c in config["block_out_channels"]]
    base = widths[0]
    if any(w % base for w in widths) or len(down) != len(widths) or len(up) != len(widths):
        raise _refuse(
            where, "block_out_channels", widths, "needs multiples of the first, one per block"
        )
    attn_down, attn_up, attn_mid = _ATTENTION[class_name]
    plain_down, plain_up = "DownBlock2D", "UpBlock2D"
    levels = []
    for lv, kind in enumerate(down):
        mirror = up[len(widths) - 1 - lv]
        if kind not in (attn_down, plain_down) or mirror not in (attn_up, plain_up):
            raise _refuse(
                where,
                "down/up_block_types",
                (kind, mirror),
                f"supported: {attn_down}/{attn_up} and {plain_down}/{plain_up}",
            )
        if (kind == attn_down) != (mirror == attn_up):
            raise _refuse(
                where, "up_block_types", up, "attention must sit at the same levels as down"
            )
        if kind == attn_down:
            levels.append(lv)
    mid = config.get("mid_block_type", attn_mid)
    add_attention = config.get("add_attention", True) if not conditional else True
    if mid not in (attn_mid, None):
        raise _refuse(where, "mid_block_type", mid, f"supported: {attn_mid}")
    mid_attention = mid is not None and add_attention
    scale_shift = config.get("resnet_time_scale_shift", "default")
    if scale_shift not in ("default", "scale_shift") or (conditional and scale_shift != "default"):
        raise _refuse(where, "resnet_time_scale_shift", scale_shift, "supported: default")
    groups = int(config.get("norm_num_groups", 32))
    attn_groups = config.get("attn_norm_num_groups")
    if not conditional and mid_attention:
        # UNet2DModel's middle attention has no GroupNorm under scale_shift unless
        # attn_norm_num_groups is set; diffuse's always has one with norm_num_groups groups.
        default = groups if scale_shift == "default" else None
        if (default if attn_groups is None else int(attn_groups)) != groups:
            raise _refuse(where, "attn_norm_num_groups", attn_groups, f"needs {groups}")
    fields: dict[str, Any] = {
        "in_channels": int(config["in_channels"]),
        "out_channels": int(config["out_channels"]),
        "image_size": int(config.get("sample_size") or 32),
        "base_channels": base,
        "channel_mult": tuple(w // base for w in widths),
        "num_res_blocks": int(config["layers_per_block"]),
        "attention_levels": tuple(levels),
        "mid_attention": mid_attention,
        "dropout": float(config.get("dropout", 0.0)),
        "scale_shift": scale_shift == "scale_shift",
        "num_groups": groups,
        "norm_eps": float(config.get("norm_eps", 1e-5)),
        "freq_shift": float(config.get("freq_shift", 0)),
        "sin_first": not bool(config.get("flip_sin_to_cos", True)),
    }
    attn_levels = levels + ([len(widths) - 1] if mid_attention else [])
    linear_projection = False
    if conditional:
        if isinstance(config.get("layers_per_block"), (list, tuple)):
            raise _refuse(where, "layers_per_block", config["layers_per_block"], "needs one int")
        depth = config.get("transformer_layers_per_block", 1)
        if not isinstance(depth, int):
            raise _refuse(where, "transformer_layers_per_block", depth, "needs one int")
        context = config.get("cross_attention_dim")
        if not isinstance(context, int):
            raise _refuse(where, "cross_attention_dim", context, "needs one int")
        # diffusers reads attention_head_dim as the head COUNT when num_attention_heads is unset.
        heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
        fields.update(_heads(heads, widths, attn_levels, where))
        fields.update(transformer_depth=depth, context_dim=context)
        linear_projection = bool(config.get("use_linear_projection", False))
    else:
        head_dim = config.get("attention_head_dim", 8)
        if attn_levels:
            counts = [w // (head_dim or w) for w in widths]
            fields.update(_heads(counts, widths, attn_levels, where))
    try:
        return UNetConfig(**fields), linear_projection
    except ValueError as err:
        raise UnsupportedModelError(f"{where}: {err}") from None


def _sd_unet_config(cfg: UNetConfig) -> dict[str, Any]:
    """The UNet2DConditionModel config of a U-Net with spatial transformers (Stable Diffusion's
    layout); its transformers project with linear maps (use_linear_projection, SD 2.x)."""
    reasons = []
    if cfg.pooled_dim:
        reasons.append("it takes a pooled text embedding (UNet2DConditionModel's added embeddings)")
    if not cfg.mid_attention:
        reasons.append("it has no middle attention (UNetMidBlock2DCrossAttn has one)")
    if cfg.scale_shift:
        reasons.append("its residual blocks use scale-shift conditioning")
    if reasons:
        raise UnsupportedModelError(
            "this U-Net has no diffusers counterpart (UNet2DConditionModel): " + "; ".join(reasons)
        )
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    levels = range(cfg.levels)
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": cfg.image_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "center_input_sample": False,
        "flip_sin_to_cos": not cfg.sin_first,
        "freq_shift": cfg.freq_shift,
        "down_block_types": [
            "CrossAttnDownBlock2D" if lv in cfg.attention_levels else "DownBlock2D" for lv in levels
        ],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": [
            "CrossAttnUpBlock2D" if lv in cfg.attention_levels else "UpBlock2D"
            for lv in reversed(levels)
        ],
        "only_cross_attention": False,
        "block_out_channels": widths,
        "layers_per_block": cfg.num_res_blocks,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "dropout": cfg.dropout,
        "act_fn": "silu",
        "norm_num_groups": cfg.num_groups,
        "norm_eps": cfg.norm_eps,
        "cross_attention_dim": cfg.context_dim,
        "transformer_layers_per_block": cfg.transformer_depth,
        # diffusers reads attention_head_dim as each level's head COUNT (its legacy naming)
        "attention_head_dim": [cfg.heads_for(w) for w in widths],
        "use_linear_projection": True,
        "upcast_attention": False,
        "resnet_time_scale_shift": "default",
    }


def unet_config_to_diffusers(cfg: UNetConfig) -> dict[str, Any]:
    """The UNet2DModel config of a diffuse U-Net without text, or the UNet2DConditionModel
    config of one with spatial transformers (no classes or extra inputs in either).

    Raises:
        UnsupportedModelError: a U-Net diffusers cannot express (named, with the reason).
    """
    reasons = []
    if cfg.context_dim and not cfg.transformer_depth:
        reasons.append("it is text-conditioned without spatial transformers")
    if cfg.num_classes:
        reasons.append("it is class-conditional (UNet2DModel has no null class)")
    if cfg.extra_in_channels:
        reasons.append("it takes extra input channels")
    if cfg.noise_scale != 1.0 or cfg.max_period != 10000.0:
        reasons.append("its noise embedding is scaled (noise_scale, max_period)")
    if reasons:
        raise UnsupportedModelError(
            "this U-Net has no diffusers counterpart: " + "; ".join(reasons)
        )
    if cfg.transformer_depth:
        return _sd_unet_config(cfg)
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    head_dims = {c // cfg.heads_for(c) for c in cfg.attention_channels()} or {widths[0]}
    if len(head_dims) != 1:
        raise UnsupportedModelError(
            f"this U-Net has no diffusers counterpart: head widths {sorted(head_dims)} differ "
            "between levels (UNet2DModel has one attention_head_dim)"
        )
    levels = range(cfg.levels)
    return {
        "_class_name": "UNet2DModel",
        "sample_size": cfg.image_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "freq_shift": cfg.freq_shift,
        "flip_sin_to_cos": not cfg.sin_first,
        "down_block_types": [
            "AttnDownBlock2D" if lv in cfg.attention_levels else "DownBlock2D" for lv in levels
        ],
        "up_block_types": [
            "AttnUpBlock2D" if lv in cfg.attention_levels else "UpBlock2D"
            for lv in reversed(levels)
        ],
        "mid_block_type": "UNetMidBlock2D",
        "add_attention": cfg.mid_attention,
        "block_out_channels": widths,
        "layers_per_block": cfg.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": cfg.dropout,
        "act_fn": "silu",
        "attention_head_dim": head_dims.pop(),
        "norm_num_groups": cfg.num_groups,
        "attn_norm_num_groups": cfg.num_groups,
        "norm_eps": cfg.norm_eps,
        "resnet_time_scale_shift": "scale_shift" if cfg.scale_shift else "default",
    }


def _resnet(ours: str, theirs: str, cin: int, cout: int) -> list[Rename]:
    out = []
    for a, b in (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj")):
        out += module_renames(f"{ours}.{a}", f"{theirs}.{b}")
    out += module_renames(f"{ours}.norm2", f"{theirs}.norm2")
    out += module_renames(f"{ours}.conv2", f"{theirs}.conv2")
    if cin != cout:
        out += module_renames(f"{ours}.skip", f"{theirs}.conv_shortcut")
    return out


def _attention(ours: str, theirs: str, cfg: UNetConfig, linear_projection: bool) -> list[Rename]:
    if not cfg.transformer_depth:  # the DDPM attention block
        qkv = tuple(f"{theirs}.to_{n}" for n in "qkv")
        return [
            *module_renames(f"{ours}.norm", f"{theirs}.group_norm"),
            *module_renames(f"{ours}.attn.qkv", qkv, op="cat"),
            *module_renames(f"{ours}.attn.proj", f"{theirs}.to_out.0"),
        ]
    proj: Any = "copy" if linear_projection else "squeeze"
    out = [
        *module_renames(f"{ours}.norm", f"{theirs}.norm"),
        *module_renames(f"{ours}.proj_in", f"{theirs}.proj_in", op=proj),
        *module_renames(f"{ours}.proj_out", f"{theirs}.proj_out", op=proj),
    ]
    for d in range(cfg.transformer_depth):
        o, t = f"{ours}.blocks.{d}", f"{theirs}.transformer_blocks.{d}"
        for n in ("norm1", "norm2", "norm3"):
            out += module_renames(f"{o}.{n}", f"{t}.{n}")
        qkv = tuple(f"{t}.attn1.to_{n}" for n in "qkv")
        out += module_renames(f"{o}.attn.qkv", qkv, bias=False, op="cat")
        out += module_renames(f"{o}.attn.proj", f"{t}.attn1.to_out.0")
        out += module_renames(f"{o}.cross.q", f"{t}.attn2.to_q", bias=False)
        kv = (f"{t}.attn2.to_k", f"{t}.attn2.to_v")
        out += module_renames(f"{o}.cross.kv", kv, bias=False, op="cat")
        out += module_renames(f"{o}.cross.proj", f"{t}.attn2.to_out.0")
        out += module_renames(f"{o}.ff.proj", f"{t}.ff.net.0.proj")
        out += module_renames(f"{o}.ff.out", f"{t}.ff.net.2")
    return out


def unet_renames(cfg: UNetConfig, linear_projection: bool = False) -> list[Rename]:
    """Every tensor of a diffuse U-Net and the diffusers tensors it comes from.

    Args:
        cfg: the U-Net's config.
        linear_projection: spatial transformers project with linear maps (else 1x1 convs).
    """
    out = [
        *module_renames("time_embed.fc1", "time_embedding.linear_1"),
        *module_renames("time_embed.fc2", "time_embedding.linear_2"),
        *module_renames("conv_in", "conv_in"),
    ]
    base, skips = cfg.base_channels, cfg.skip_channels()
    ch, stage = base, 0
    for lv, mult in enumerate(cfg.channel_mult):
        for k in range(cfg.num_res_blocks):
            cout = base * mult
            out += _resnet(f"down.{stage}.res", f"down_blocks.{lv}.resnets.{k}", ch, cout)
            if lv in cfg.attention_levels:
                theirs = f"down_blocks.{lv}.attentions.{k}"
                out += _attention(f"down.{stage}.attn", theirs, cfg, linear_projection)
            ch, stage = cout, stage + 1
        if lv != cfg.levels - 1:
            out += module_renames(f"downsample.{lv}.conv", f"down_blocks.{lv}.downsamplers.0.conv")
    out += _resnet("mid1", "mid_block.resnets.0", ch, ch)
    if cfg.mid_attention:
        out += _attention("mid_attn", "mid_block.attentions.0", cfg, linear_projection)
    out += _resnet("mid2", "mid_block.resnets.1", ch, ch)
    stage = 0
    for i, lv in enumerate(reversed(range(cfg.levels))):
        cout = base * cfg.channel_mult[lv]
        for k in range(cfg.num_res_blocks + 1):
            cin = ch + skips.pop()
            out += _resnet(f"up.{stage}.res", f"up_blocks.{i}.resnets.{k}", cin, cout)
            if lv in cfg.attention_levels:
                theirs = f"up_blocks.{i}.attentions.{k}"
                out += _attention(f"up.{stage}.attn", theirs, cfg, linear_projection)
            ch, stage = cout, stage + 1
        if lv != 0:
            out += module_renames(f"upsample.{i}.conv", f"up_blocks.{i}.upsamplers.0.conv")
    out += module_renames("norm_out", "conv_norm_out")
    out += module_renames("conv_out", "conv_out")
    return out
