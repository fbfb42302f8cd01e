"""Reading and writing the diffusers folder layout (model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/, safetensors weights).

Each diffusers component is mapped onto a diffuse network, codec or process by renaming and
reshaping its weights (no diffusers module runs here, and diffusers is not imported):

    folder.py      finding components, configs and weights files; the supported classes
    weights.py     the one renaming/reshaping routine both directions use
    unet.py        UNet2DModel and UNet2DConditionModel <-> `nets.unet.UNet`
    dit.py         DiTTransformer2DModel, PixArt-style Transformer2DModel <-> `nets.dit.DiT`
    autoencoder.py AutoencoderKL <-> `codecs.autoencoder_kl.AutoencoderKL`
    scheduler.py   scheduler configs <-> a diffuse process, parametrisation and schedule
    pipeline.py    a whole folder -> `ImportedModel`; a diffuse network -> a diffusers folder

Supported: UNet2DModel, UNet2DConditionModel (Stable Diffusion 1.x/2.x layouts),
DiTTransformer2DModel (class-conditional), PixArtTransformer2DModel / Transformer2DModel
(PixArt-alpha's text-conditioned layout, or the class-conditional DiT one), AutoencoderKL, CLIP
and T5 text encoders (run by `codecs.text_encoder` through transformers) and the DDPM-family
schedulers (`SUPPORTED_CLASSES`). Not yet: PixArt's resolution embeddings
(`use_additional_conditions`), SDXL's added embeddings, ControlNet and LoRA files.
`model_folder` turns an import into a diffuse model folder (`diffuse convert`,
or on the fly for any `--model`).
"""

from diffuse.interop.folder import (
    SUPPORTED_CLASSES,
    UnsupportedModelError,
    is_diffusers_folder,
    weights_digest,
)
from diffuse.interop.pipeline import (
    ImportedModel,
    export_component,
    export_diffusers,
    import_diffusers,
)

__all__ = [
    "SUPPORTED_CLASSES",
    "ImportedModel",
    "UnsupportedModelError",
    "export_component",
    "export_diffusers",
    "import_diffusers",
    "is_diffusers_folder",
    "weights_digest",
]
