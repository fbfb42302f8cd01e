"""A whole diffusers folder as diffuse parts, and a diffuse network as a diffusers folder.

    imported = import_diffusers("sd-folder")     # ImportedModel: net, process, codec, text
    export_diffusers(net, process, "leading", "out-folder")

Importing builds diffuse's own modules (`nets.unet.UNet`, `codecs.autoencoder_kl`) and loads
the renamed weights into them; nothing from diffusers runs. Exporting writes what
`diffusers.DiffusionPipeline.from_pretrained` reads: model_index.json, unet/ (config.json,
diffusion_pytorch_model.safetensors) and scheduler/ (scheduler_config.json).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor, nn

from diffuse.codecs.autoencoder_kl import AutoencoderKL
from diffuse.config import DiscreteVPOptions, ProcessConfig
from diffuse.interop.autoencoder import (
    autoencoder_config_from_diffusers,
    autoencoder_config_to_diffusers,
    autoencoder_renames,
)
from diffuse.interop.dit import (
    PIXART_CLASSES,
    dit_config_from_diffusers,
    dit_config_to_diffusers,
    dit_renames,
    dit_state_from_diffusers,
    dit_state_to_diffusers,
    is_pixart,
    pixart_config_from_diffusers,
    pixart_renames,
    pixart_state_from_diffusers,
)
from diffuse.interop.folder import (
    Component,
    UnsupportedModelError,
    class_labels,
    find_components,
    read_config,
    read_weights,
    weights_file,
)
from diffuse.interop.scheduler import (
    SchedulerDefaults,
    scheduler_from_diffusers,
    scheduler_to_diffusers,
)
from diffuse.interop.unet import unet_config_from_diffusers, unet_config_to_diffusers, unet_renames
from diffuse.interop.weights import Rename, to_diffuse, to_diffusers
from diffuse.io import MissingModelFileError, ModelFileError, atomic_folder, atomic_write_text
from diffuse.nets.dit import DiT
from diffuse.nets.unet import UNet

__all__ = [
    "ImportedModel",
    "export_component",
    "export_diffusers",
    "import_codec",
    "import_diffusers",
]

logger = logging.getLogger(__name__)

NETWORK_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", *PIXART_CLASSES)
TRANSFORMER_CLASSES = ("DiTTransformer2DModel", *PIXART_CLASSES)
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "T5EncoderModel")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
# The version written into exported configs: the oldest diffusers whose loaders read them.
DIFFUSERS_VERSION = "0.30.0"


@dataclass
class ImportedModel:
    """A diffusers model as diffuse parts.

    Attributes:
        net: the denoiser network, weights loaded, in eval mode.
        process: the noise process and parametrisation of its scheduler.
        sampler, schedule: the default sampler and schedule its scheduler implies.
        codec: the latent codec (None for a pixel model).
        text_encoder, tokenizer: folders of the text encoder and its tokenizer (None without).
        text_padding: "max_length" when the network was trained on a full fixed-length CLIP
            context (Stable Diffusion), else "longest".
        source: the folder it came from.
        labels: class names by index (a DiT pipeline's id2label; others are named by index).
    """

    net: nn.Module
    process: ProcessConfig
    sampler: str
    schedule: str
    codec: AutoencoderKL | None
    text_encoder: Path | None
    tokenizer: Path | None
    text_padding: str
    source: Path
    labels: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def channels(self) -> int:
        """Channels the network makes."""
        return self.net.config.out_channels

    @property
    def image_size(self) -> int:
        """Side of what the network makes (latents of a latent model)."""
        return self.net.config.image_size

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names of a class-conditional network (its index where none is recorded)."""
        return tuple(self.labels.get(i, str(i)) for i in range(self.net.config.num_classes))


def _load(
    net: nn.Module,
    renames: list[Rename],
    component: Component,
    arrange: Callable[[dict[str, Tensor], str], dict[str, Tensor]] | None = None,
) -> nn.Module:
    state, path = read_weights(component)
    if arrange is not None:
        state = arrange(state, str(path))
    try:
        net.load_state_dict(to_diffuse(renames, state, str(path)))
    except RuntimeError as err:  # shape mismatches between the weights and config.json
        first = str(err).strip().splitlines()[1:2] or [str(err)]
        raise ModelFileError(f"{path} does not match its config.json: {first[0].strip()}") from None
    return net.eval().requires_grad_(False)


def import_network(component: Component) -> nn.Module:
    """The diffuse network of a UNet2DModel, UNet2DConditionModel, DiTTransformer2DModel or
    PixArt-style (PixArt)Transformer2DModel component."""
    where = str(component.folder / "config.json")
    if component.class_name not in NETWORK_CLASSES:
        raise UnsupportedModelError(
            f"{component.folder}: {component.class_name} is not a denoiser network; supported: "
            f"{', '.join(NETWORK_CLASSES)}"
        )
    config = read_config(component)
    pixart = is_pixart(component.class_name, config)
    try:
        if pixart:
            dit = pixart_config_from_diffusers(config, where)
        elif component.class_name in TRANSFORMER_CLASSES:
            if config.get("patch_size") is None:
                raise UnsupportedModelError(
                    f"{where}: a {component.class_name} without patch_size (a transformer over "
                    "continuous or discrete inputs) is not supported; supported: DiT "
                    "(norm_type 'ada_norm_zero') and PixArt (norm_type 'ada_norm_single')"
                )
            dit = dit_config_from_diffusers(config, where)
        else:
            cfg, linear = unet_config_from_diffusers(config, component.class_name, where)
    except KeyError as err:
        raise ModelFileError(f"{where} is damaged: missing key {err}") from None
    if pixart:

        def arrange_pixart(state: dict[str, Tensor], path: str) -> dict[str, Tensor]:
            return pixart_state_from_diffusers(dit, config, state)

        return _load(DiT(dit), pixart_renames(dit), component, arrange_pixart)
    if component.class_name in TRANSFORMER_CLASSES:

        def arrange(state: dict[str, Tensor], path: str) -> dict[str, Tensor]:
            return dit_state_from_diffusers(dit, config, state, path)

        return _load(DiT(dit), dit_renames(dit), component, arrange)
    return _load(UNet(cfg), unet_renames(cfg, linear), component)


def import_codec(component: Component) -> AutoencoderKL:
    """The KL autoencoder codec of an AutoencoderKL component."""
    cfg = autoencoder_config_from_diffusers(
        read_config(component), str(component.folder / "config.json")
    )
    return _load(AutoencoderKL(cfg), autoencoder_renames(cfg), component)


def _scheduler(component: Component | None) -> tuple[ProcessConfig, SchedulerDefaults]:
    if component is None:
        # A lone network folder: diffusers' DDPMScheduler defaults (linear betas, epsilon).
        logger.warning("no scheduler/ folder: assuming DDPM's linear schedule and eps prediction")
        process = ProcessConfig(
            kind="discrete_vp", parametrization="eps", options=DiscreteVPOptions()
        )
        return process, SchedulerDefaults("ddim", "leading")
    names = ("scheduler_config.json", "config.json")
    path = next((component.folder / n for n in names if (component.folder / n).is_file()), None)
    if path is None:
        raise MissingModelFileError(f"{component.folder}: no scheduler_config.json")
    try:
        config = json.loads(path.read_text())
    except ValueError as err:
        raise ModelFileError(f"{path} is damaged: not valid JSON ({err})") from None
    return scheduler_from_diffusers(config, component.class_name, str(path))


def import_diffusers(folder: str | os.PathLike) -> ImportedModel:
    """Import a diffusers pipeline folder, or a single network component folder.

    Args:
        folder: a local folder (never downloaded).
    Returns:
        The model as diffuse parts.
    Raises:
        MissingModelFileError: a file the folder needs is missing (FileNotFoundError too).
        UnsupportedModelError: an unsupported class or config value, or pickle-only weights.
        ModelFileError: damaged files, weights that do not match their config.
    """
    folder = Path(folder)
    components = {c.name: c for c in find_components(folder)}
    networks = [c for c in components.values() if c.class_name in NETWORK_CLASSES]
    if len(networks) != 1:
        raise UnsupportedModelError(
            f"{folder}: needs exactly one denoiser network ({', '.join(NETWORK_CLASSES)}), "
            f"found {[c.class_name for c in networks]}"
        )
    net = import_network(networks[0])
    schedulers = [c for c in components.values() if c.name == "scheduler"]
    process, defaults = _scheduler(schedulers[0] if schedulers else None)
    vae = components.get("vae")
    codec = import_codec(vae) if vae is not None else None
    text = components.get("text_encoder")
    tokenizer = components.get("tokenizer")
    if text is not None:
        weights_file(text.folder)  # refuses pickle-only text encoders before anything runs
        if tokenizer is None:
            raise MissingModelFileError(f"{folder}: a text_encoder/ needs its tokenizer/")
    if net.config.context_dim and text is None:
        raise MissingModelFileError(
            f"{folder}: the network is text-conditioned but there is no text_encoder/"
        )
    if codec is not None and codec.channels != net.config.in_channels:
        raise ModelFileError(
            f"{folder}: the vae makes {codec.channels}-channel latents but the network takes "
            f"{net.config.in_channels} channels"
        )
    clip = text is not None and text.class_name == "CLIPTextModel"
    return ImportedModel(
        net=net,
        process=process,
        sampler=defaults.sampler,
        schedule=defaults.schedule,
        codec=codec,
        text_encoder=None if text is None else text.folder,
        tokenizer=None if tokenizer is None else tokenizer.folder,
        text_padding="max_length" if clip else "longest",
        source=folder,
        labels=class_labels(folder),
    )


def _write_component(folder: Path, config: dict, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_diffusers_version": DIFFUSERS_VERSION, **config}
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    save_file(state, str(folder / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})


def _component_files(module: nn.Module) -> tuple[dict, dict]:
    """(config.json, diffusers state dict) of a diffuse network or codec.

    Raises:
        UnsupportedModelError: a module without a diffusers counterpart (why).
    """
    if isinstance(module, UNet):
        config = unet_config_to_diffusers(module.config)
        linear = bool(module.config.transformer_depth)  # exported with linear projections
        return config, to_diffusers(unet_renames(module.config, linear), module.state_dict())
    if isinstance(module, DiT):
        config = dit_config_to_diffusers(module.config)
        renamed = to_diffusers(dit_renames(module.config), module.state_dict())
        return config, dit_state_to_diffusers(module.config, renamed)
    if isinstance(module, AutoencoderKL):
        config = autoencoder_config_to_diffusers(module.cfg)
        return config, to_diffusers(autoencoder_renames(module.cfg), module.state_dict())
    raise UnsupportedModelError(
        f"{type(module).__name__} has no diffusers export; supported: U-Nets (UNet2DModel, "
        "UNet2DConditionModel with spatial transformers), class-conditional DiTs "
        "(DiTTransformer2DModel) and KL autoencoders (AutoencoderKL)"
    )


def export_component(
    module: nn.Module, folder: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write one network or codec as a diffusers component folder (config.json and
    diffusion_pytorch_model.safetensors), which its class's `from_pretrained` reads: a U-Net
    (UNet2DModel, or UNet2DConditionModel for a Stable-Diffusion-shaped one), a class-
    conditional DiT (DiTTransformer2DModel) or a KL autoencoder codec (AutoencoderKL).

    Args:
        module: a `nets.unet.UNet`, `nets.dit.DiT` or `codecs.autoencoder_kl.AutoencoderKL`.
        folder: the destination; written whole or not at all.
        overwrite: replace an existing destination.
    Returns:
        The folder.
    Raises:
        UnsupportedModelError: a module without a diffusers counterpart (why).
        FileExistsError: the destination exists and overwrite is False.
    """
    folder = Path(folder)
    config, state = _component_files(module)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) to replace it")
    with atomic_folder(folder) as tmp:
        _write_component(tmp, config, state)
    return folder


def export_diffusers(
    net: nn.Module,
    process: ProcessConfig,
    schedule: str,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a diffuse pixel-space U-Net or class-conditional DiT as a diffusers folder:
    model_index.json, unet/ (UNet2DModel) or transformer/ (DiTTransformer2DModel), and
    scheduler/ (DDIMScheduler).

    Args:
        net: a `nets.unet.UNet` without text, classes or extra inputs, or a `nets.dit.DiT`
            with classes and DiT's own noise embedding (e.g. one imported from diffusers).
        process: its process config (discrete_vp with eps, v or x0 prediction).
        schedule: its default schedule (chooses the scheduler's timestep_spacing).
        folder: the destination; written whole or not at all.
        overwrite: replace an existing destination.
    Returns:
        The folder.
    Raises:
        UnsupportedModelError: a network or process without a diffusers counterpart (why).
        FileExistsError: the destination exists and overwrite is False.
    """
    folder = Path(folder)
    if isinstance(net, UNet) and net.config.context_dim:
        raise UnsupportedModelError(
            "a text-conditioned U-Net has no diffusers pipeline of its own (a Stable Diffusion "
            "pipeline needs its codec and text encoder too); export the U-Net as a component "
            "(interop.export_component: UNet2DConditionModel)"
        )
    if isinstance(net, (UNet, DiT)):
        name = "unet" if isinstance(net, UNet) else "transformer"
        pipeline = "DDIMPipeline" if isinstance(net, UNet) else "DiTPipeline"
        config, state = _component_files(net)
    else:
        raise UnsupportedModelError(
            f"{type(net).__name__} networks have no diffusers export; supported: U-Nets "
            "(UNet2DModel) and class-conditional DiTs (DiTTransformer2DModel)"
        )
    scheduler = scheduler_to_diffusers(process, schedule)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True (--overwrite) to replace it")
    with atomic_folder(folder) as tmp:
        _write_component(tmp / name, config, state)
        (tmp / "scheduler").mkdir()
        scheduler = {"_diffusers_version": DIFFUSERS_VERSION, **scheduler}
        text = json.dumps(scheduler, indent=2) + "\n"
        atomic_write_text(tmp / "scheduler" / "scheduler_config.json", text)
        index = {
            "_class_name": pipeline,
            "_diffusers_version": DIFFUSERS_VERSION,
            "scheduler": ["diffusers", "DDIMScheduler"],
            name: ["diffusers", config["_class_name"]],
        }
        atomic_write_text(tmp / "model_index.json", json.dumps(index, indent=2) + "\n")
    return folder
