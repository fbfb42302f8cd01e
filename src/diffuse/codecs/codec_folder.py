"""Load any saved codec folder: vae.json's "kind" says which codec wrote it."""

from __future__ import annotations

import json
from pathlib import Path

from diffuse.codecs.autoencoder_kl import KIND as KL_KIND
from diffuse.codecs.autoencoder_kl import AutoencoderKL, load_autoencoder_kl
from diffuse.codecs.vae import VAE, VAE_CONFIG_FILE, load_vae
from diffuse.io import ModelFileError

__all__ = ["load_codec"]


def load_codec(folder: str | Path) -> VAE | AutoencoderKL:
    """The codec saved in `folder`: a diffuse VAE (`codecs.vae`) or a KL autoencoder
    (`codecs.autoencoder_kl`, what a diffusers model's AutoencoderKL becomes).

    Raises:
        MissingModelFileError: a file is missing.
        ModelFileError: a damaged file or an unknown kind (naming it).
    """
    path = Path(folder) / VAE_CONFIG_FILE
    try:
        kind = json.loads(path.read_text()).get("kind", "vae") if path.is_file() else "vae"
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise ModelFileError(f"{path} is damaged: {err}") from None
    if kind == KL_KIND:
        return load_autoencoder_kl(folder)
    if kind != "vae":
        raise ModelFileError(f"{path}: unknown codec kind {kind!r}; known: vae, {KL_KIND}")
    return load_vae(folder)
