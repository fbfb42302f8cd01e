"""diffusers' DiTTransformer2DModel (class-conditional DiT, Peebles & Xie 2023) and PixArt-style
Transformer2DModel / PixArtTransformer2DModel (text-conditioned, Chen et al. 2023) as diffuse's
DiT.

The two are the same network: patch embedding, fixed 2-D sine-cosine positions, adaLN-Zero
blocks (attention with biased q, k, v; tanh-GELU MLP), an adaLN final layer. What differs is
bookkeeping, handled here:

- diffusers keeps a copy of the timestep and class embedders in every block (all equal in a
  converted DiT checkpoint); diffuse has one. Blocks whose copies differ are refused.
- diffusers' final projection emits each patch in (row, column, channel) order, diffuse's in
  (channel, row, column) order: its rows are permuted. A learned-sigma output (out_channels =
  2 in_channels) keeps its first in_channels channels, the noise prediction (the variance
  channels are only used by DDPM's learned-variance sampler).
- A class table without the extra "dropped label" row (class_dropout_prob 0) gets a zero row
  as the null class.

PixArt's transformer is diffuse's DiT with `adaln="single"`, `cross_norm=False` and
`context_mlp=True` (see `nets.dit`); its timestep features are [cos, sin] with freq_shift 0 and
its positions are divided by `interpolation_scale`. The resolution and aspect-ratio embeddings
of PixArt-alpha's 1024-pixel model (`use_additional_conditions`) are not reproduced and such a
config is refused. A Transformer2DModel with `norm_type="ada_norm_zero"` is the class-conditional
DiT and is imported as DiTTransformer2DModel is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffuse.interop.folder import UnsupportedModelError
from diffuse.interop.weights import Rename, module_renames
from diffuse.nets.dit import DiTConfig

__all__ = [
    "PIXART_CLASSES",
    "dit_config_from_diffusers",
    "dit_config_to_diffusers",
    "dit_renames",
    "dit_state_from_diffusers",
    "dit_state_to_diffusers",
    "is_pixart",
    "pixart_config_from_diffusers",
    "pixart_renames",
    "pixart_state_from_diffusers",
]

PIXART_CLASSES = ("PixArtTransformer2DModel", "Transformer2DModel")

_FIXED: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_zero",
    "norm_elementwise_affine": False,
    "attention_bias": True,
}
_EMB = "norm1.emb"


def dit_config_from_diffusers(config: dict[str, Any], where: str) -> DiTConfig:
    """The diffuse DiT config of a DiTTransformer2DModel config.json.

    Raises:
        UnsupportedModelError: a key whose value the DiT does not reproduce (named).
    """
    for key, want in _FIXED.items():
        if config.get(key, want) != want:
            raise UnsupportedModelError(
                f"{where}: {key}={config[key]!r} is not supported (needs {want!r})"
            )
    cin = int(config.get("in_channels", 4))
    cout = int(config.get("out_channels") or cin)
    if cout not in (cin, 2 * cin):
        raise UnsupportedModelError(
            f"{where}: out_channels={cout} is not supported (needs {cin} or {2 * cin})"
        )
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    try:
        return DiTConfig(
            in_channels=cin,
            out_channels=cin,
            image_size=int(config["sample_size"]),
            patch_size=int(config["patch_size"]),
            hidden_size=heads * head_dim,
            depth=int(config["num_layers"]),
            num_heads=heads,
            mlp_ratio=4.0,
            num_classes=int(config["num_embeds_ada_norm"]),
            freq_dim=256,
            freq_shift=1.0,
            mlp_norm_eps=float(config.get("norm_eps", 1e-5)),
        )
    except ValueError as err:
        raise UnsupportedModelError(f"{where}: {err}") from None


def _reorder_output_rows(
    state: dict[str, Tensor], key: str, p: int, cin: int, cout: int
) -> dict[str, Tensor]:
    """The final projection's rows from diffusers' (row, column, channel) patch order to
    diffuse's (channel, row, column), keeping the first `cin` of `cout` channels."""
    for name in ("weight", "bias"):
        full = f"{key}.{name}"
        if full in state:
            rows = state[full].reshape(p, p, cout, *state[full].shape[1:])  # (p, q, c, ...)
            rows = rows[:, :, :cin].movedim(2, 0)  # (c, p, q, ...): diffuse's patch order
            state[full] = rows.reshape(cin * p * p, *state[full].shape[1:])
    return state


def dit_state_from_diffusers(
    cfg: DiTConfig, config: dict[str, Any], state: dict[str, Tensor], where: str
) -> dict[str, Tensor]:
    """The diffusers tensors rearranged so that `dit_renames` maps them one to one: the
    per-block embedder copies checked and dropped, the output rows reordered and cut, the null
    class row added if missing, the fixed position table dropped."""
    state = dict(state)
    state.pop("pos_embed.pos_embed", None)  # a fixed sin-cos table diffuse computes itself
    first = f"transformer_blocks.0.{_EMB}."
    shared = [k[len(first) :] for k in state if k.startswith(first)]
    for i in range(1, cfg.depth):
        for name in shared:
            key = f"transformer_blocks.{i}.{_EMB}.{name}"
            if key in state and not torch.equal(state.pop(key), state[first + name]):
                raise UnsupportedModelError(
                    f"{where}: block {i}'s timestep/class embedder differs from block 0's "
                    "(diffuse's DiT shares one embedder)"
                )
    table = first + "class_embedder.embedding_table.weight"
    if table in state and state[table].shape[0] == cfg.num_classes:
        state[table] = torch.cat([state[table], state[table].new_zeros(1, cfg.hidden_size)])
    cout = int(config.get("out_channels") or cfg.in_channels)
    return _reorder_output_rows(state, "proj_out_2", cfg.patch_size, cfg.in_channels, cout)


def dit_renames(cfg: DiTConfig) -> list[Rename]:
    """Every tensor of a class-conditional diffuse DiT and its (rearranged) diffusers tensor."""
    emb = f"transformer_blocks.0.{_EMB}"
    out = [
        *module_renames("patch_embed", "pos_embed.proj", op="squeeze"),
        *module_renames("time_embed.fc1", f"{emb}.timestep_embedder.linear_1"),
        *module_renames("time_embed.fc2", f"{emb}.timestep_embedder.linear_2"),
        Rename("class_embed.weight", (f"{emb}.class_embedder.embedding_table.weight",)),
        *module_renames("final.ada", "proj_out_1"),
        *module_renames("final.linear", "proj_out_2"),
    ]
    for i in range(cfg.depth):
        o, t = f"blocks.{i}", f"transformer_blocks.{i}"
        out += module_renames(f"{o}.ada", f"{t}.norm1.linear")
        qkv = tuple(f"{t}.attn1.to_{n}" for n in "qkv")
        out += module_renames(f"{o}.attn.qkv", qkv, op="cat")
        out += module_renames(f"{o}.attn.proj", f"{t}.attn1.to_out.0")
        out += module_renames(f"{o}.mlp.fc1", f"{t}.ff.net.0.proj")
        out += module_renames(f"{o}.mlp.fc2", f"{t}.ff.net.2")
    return out


def is_pixart(class_name: str, config: dict[str, Any]) -> bool:
    """Whether a transformer config is PixArt-style (adaLN-single) rather than DiT."""
    return class_name == "PixArtTransformer2DModel" or (
        class_name == "Transformer2DModel" and config.get("norm_type") == "ada_norm_single"
    )


def pixart_config_from_diffusers(config: dict[str, Any], where: str) -> DiTConfig:
    """The diffuse DiT config of a PixArt-style transformer config.json.

    Raises:
        UnsupportedModelError: a key whose value the DiT does not reproduce (named).
    """
    fixed = _FIXED | {"norm_type": "ada_norm_single", "attention_type": "default"}
    fixed |= {"upcast_attention": False, "num_vector_embeds": None}
    for key, want in fixed.items():
        if config.get(key, want) != want:
            raise UnsupportedModelError(
                f"{where}: {key}={config[key]!r} is not supported (needs {want!r})"
            )
    size = int(config["sample_size"])
    extra = config.get("use_additional_conditions")
    if extra or (extra is None and size == 128):
        raise UnsupportedModelError(
            f"{where}: use_additional_conditions (resolution and aspect-ratio embeddings, "
            f"implied by sample_size={size}) is not supported"
        )
    if config.get("patch_size") is None or not config.get("caption_channels"):
        raise UnsupportedModelError(
            f"{where}: a PixArt transformer needs patch_size and caption_channels"
        )
    cin = int(config.get("in_channels", 4))
    cout = int(config.get("out_channels") or cin)
    if cout not in (cin, 2 * cin):
        raise UnsupportedModelError(
            f"{where}: out_channels={cout} is not supported (needs {cin} or {2 * cin})"
        )
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    hidden = heads * head_dim
    if int(config.get("cross_attention_dim") or hidden) != hidden:
        raise UnsupportedModelError(
            f"{where}: cross_attention_dim={config['cross_attention_dim']} is not supported "
            f"(PixArt's caption projection makes it the width {hidden})"
        )
    interpolation = config.get("interpolation_scale")
    interpolation = max(size // 64, 1) if interpolation is None else float(interpolation)
    try:
        return DiTConfig(
            in_channels=cin,
            out_channels=cin,
            image_size=size,
            patch_size=int(config["patch_size"]),
            hidden_size=hidden,
            depth=int(config["num_layers"]),
            num_heads=heads,
            mlp_ratio=4.0,
            context_dim=int(config["caption_channels"]),
            text_mode="cross",
            freq_dim=256,
            freq_shift=0.0,
            mlp_norm_eps=float(config.get("norm_eps", 1e-6)),
            adaln="single",
            cross_norm=False,
            context_mlp=True,
            pos_scale=1.0 / interpolation,
        )
    except ValueError as err:
        raise UnsupportedModelError(f"{where}: {err}") from None


def pixart_state_from_diffusers(
    cfg: DiTConfig, config: dict[str, Any], state: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The PixArt tensors rearranged so that `pixart_renames` maps them one to one: the output
    rows reordered and cut, the fixed position table dropped."""
    state = dict(state)
    state.pop("pos_embed.pos_embed", None)  # a fixed sin-cos table diffuse computes itself
    cout = int(config.get("out_channels") or cfg.in_channels)
    return _reorder_output_rows(state, "proj_out", cfg.patch_size, cfg.in_channels, cout)


def pixart_renames(cfg: DiTConfig) -> list[Rename]:
    """Every tensor of a PixArt-layout diffuse DiT and its (rearranged) diffusers tensor."""
    emb = "adaln_single.emb.timestep_embedder"
    out = [
        *module_renames("patch_embed", "pos_embed.proj", op="squeeze"),
        *module_renames("time_embed.fc1", f"{emb}.linear_1"),
        *module_renames("time_embed.fc2", f"{emb}.linear_2"),
        *module_renames("context_mlp.0", "caption_projection.linear_1"),
        *module_renames("context_mlp.2", "caption_projection.linear_2"),
        *module_renames("ada_single", "adaln_single.linear"),
        Rename("final.table", ("scale_shift_table",)),
        *module_renames("final.linear", "proj_out"),
    ]
    for i in range(cfg.depth):
        o, t = f"blocks.{i}", f"transformer_blocks.{i}"
        out.append(Rename(f"{o}.table", (f"{t}.scale_shift_table",)))
        qkv = tuple(f"{t}.attn1.to_{n}" for n in "qkv")
        out += module_renames(f"{o}.attn.qkv", qkv, op="cat")
        out += module_renames(f"{o}.attn.proj", f"{t}.attn1.to_out.0")
        out += module_renames(f"{o}.cross.q", f"{t}.attn2.to_q")
        kv = (f"{t}.attn2.to_k", f"{t}.attn2.to_v")
        out += module_renames(f"{o}.cross.kv", kv, op="cat")
        out += module_renames(f"{o}.cross.proj", f"{t}.attn2.to_out.0")
        out += module_renames(f"{o}.mlp.fc1", f"{t}.ff.net.0.proj")
        out += module_renames(f"{o}.mlp.fc2", f"{t}.ff.net.2")
    return out


def dit_config_to_diffusers(cfg: DiTConfig) -> dict[str, Any]:
    """The DiTTransformer2DModel config of a class-conditional diffuse DiT.

    Raises:
        UnsupportedModelError: a DiT that DiTTransformer2DModel cannot express (the reasons).
    """
    wanted = {
        "num_classes > 0": cfg.num_classes > 0,
        "no text (context_dim = pooled_dim = 0)": not (cfg.context_dim or cfg.pooled_dim),
        "no extra input channels": not cfg.extra_in_channels,
        "sin-cos positions": cfg.pos_embed == "sincos",
        "no qk_norm": not cfg.qk_norm,
        "adaLN-Zero (adaln 'zero')": cfg.adaln == "zero",
        "images, not video (frames 0)": not cfg.frames,
        "positions at integer grid points (pos_scale 1)": cfg.pos_scale == 1.0,
        "mlp_ratio 4": cfg.mlp_ratio == 4.0,
        "the original DiT noise embedding (freq_dim 256, freq_shift 1, noise_scale 1, "
        "max_period 10000)": (cfg.freq_dim, cfg.freq_shift, cfg.noise_scale, cfg.max_period)
        == (256, 1.0, 1.0, 10000.0),
    }
    missing = [name for name, ok in wanted.items() if not ok]
    if missing:
        raise UnsupportedModelError(
            "this DiT has no diffusers counterpart (DiTTransformer2DModel) without: "
            + "; ".join(missing)
        )
    return {
        "_class_name": "DiTTransformer2DModel",
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "num_layers": cfg.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,
        "attention_bias": True,
        "sample_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": cfg.num_classes,
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": cfg.mlp_norm_eps,
    }


def dit_state_to_diffusers(cfg: DiTConfig, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of `dit_state_from_diffusers` on `to_diffusers` output: the patch embedding as
    a convolution kernel, the embedder copied into every block and the output rows back in
    (row, column, channel) patch order."""
    state = dict(state)
    p, c = cfg.patch_size, cfg.out_channels
    weight = state["pos_embed.proj.weight"]  # the patch embedding as a stride-p convolution
    state["pos_embed.proj.weight"] = weight.reshape(cfg.hidden_size, cfg.in_channels, p, p)
    for name in ("weight", "bias"):
        key = f"proj_out_2.{name}"
        rows = state[key].reshape(c, p, p, *state[key].shape[1:]).movedim(0, 2)  # (p, q, c)
        state[key] = rows.reshape(c * p * p, *state[key].shape[1:]).contiguous()
    first = f"transformer_blocks.0.{_EMB}."
    for key in [k for k in state if k.startswith(first)]:
        for i in range(1, cfg.depth):
            state[key.replace("blocks.0.", f"blocks.{i}.", 1)] = state[key].clone()
    return state
