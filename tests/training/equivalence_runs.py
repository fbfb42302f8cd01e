"""Tiny training runs whose losses and weights are pinned in data/refactor_equivalence.json.

Run `PYTHONPATH=src python tests/training/equivalence_runs.py` to print the record of the
current code (used once to write the fixture, before the trainer was split into modules).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from tests.tiny_models import TINY_PIXEL_RECIPE

from diffuse.config import load_recipe
from diffuse.training.loop import train
from diffuse.training.vae_loop import train_vae

FIXTURE = Path(__file__).resolve().parent / "data" / "refactor_equivalence.json"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

PIXEL = [
    *TINY_PIXEL_RECIPE,
    "data.flip=true",
    "optim.batch_size=8",
    "optim.micro_batch=3",
    "optim.warmup_steps=2",
    "optim.schedule='cosine'",
    "train.steps=6",
    "train.threads=1",
    "log.every_steps=1",
    "log.progress=false",
    "checkpoint.every_steps=3",
    "ema.halflife_images=40",
]
VAE = [
    "vae.base_channels=8",
    "vae.channel_mult=[1, 1, 2]",
    "vae.num_groups=4",
    "data.source='procedural'",
    "data.size=16",
    "data.resolution=16",
    "data.channels=3",
    "optim.batch_size=8",
    "optim.warmup_steps=0",
    "loss.disc=0.1",
    "loss.disc_start=2",
    "train.steps=4",
    "train.max_minutes=0",
    "train.threads=1",
    "checkpoint.every_steps=2",
    "log.every_steps=1",
    "log.progress=false",
]
LATENT = [
    "model.preset='unet-tiny'",
    "model.overrides={base_channels=8, channel_mult=[1, 2], num_groups=4, "
    "head_channels=8, attention_levels=[1]}",
    "data.source='procedural'",
    "data.resolution=16",
    "data.size=16",
    "data.channels=3",
    "data.num_classes=2",
    "data.flip=true",
    "optim.batch_size=8",
    "train.steps=3",
    "train.threads=1",
    "log.every_steps=1",
    "log.progress=false",
    "checkpoint.every_steps=3",
]
TEXT = [
    "data.size=16",
    "train.max_minutes=0",
    "train.threads=1",
    "model.overrides={base_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
    "attention_levels=[1], head_channels=16, num_groups=8, dropout=0.0}",
    "optim.batch_size=8",
    "train.steps=3",
    "checkpoint.every_steps=3",
    "log.every_steps=1",
    "log.progress=false",
]


def tensors_sha256(path: Path) -> str:
    """sha256 over the tensors of a safetensors file: names, dtypes, shapes and bytes, sorted."""
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def record_runs(root: Path) -> dict[str, dict]:
    """Train the pixel, autoencoder, latent and text-conditioned tiny runs under `root`.

    Returns: {name: {"losses": [...], "weights": {file: sha256}}}.
    """
    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    pixel = train(load_recipe(None, PIXEL), root / "pixel")
    out["pixel"] = {
        "losses": _losses(pixel.run_dir),
        "weights": {
            "model/model.safetensors": tensors_sha256(pixel.run_dir / "model/model.safetensors"),
            "checkpoints/step-6/model.safetensors": tensors_sha256(
                pixel.run_dir / "checkpoints/step-6/model.safetensors"
            ),
        },
    }
    vae = train_vae(load_recipe(str(CONFIGS / "shapes-vae.toml"), VAE), root / "vae")
    out["vae"] = {
        "losses": _losses(vae.run_dir),
        "weights": {"model/vae.safetensors": tensors_sha256(vae.model_dir / "vae.safetensors")},
    }
    latent = train(load_recipe(None, [*LATENT, f"data.codec='{vae.model_dir}'"]), root / "latent")
    out["latent"] = {
        "losses": _losses(latent.run_dir),
        "weights": {
            "model/model.safetensors": tensors_sha256(latent.run_dir / "model/model.safetensors")
        },
    }
    text = train(load_recipe(str(CONFIGS / "shapes-t2i.toml"), TEXT), root / "text")
    out["text"] = {
        "losses": _losses(text.run_dir),
        "weights": {
            "model/model.safetensors": tensors_sha256(text.run_dir / "model/model.safetensors")
        },
    }
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        json.dump(record_runs(Path(tmp)), sys.stdout, indent=1)
        print()
