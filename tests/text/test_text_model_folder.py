"""Text model folders: round trip, float16 storage, and the wrong kind of folder refused."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from diffuse.io import ModelFileError
from diffuse.model_folder import INFO_FILE, load_model, read_info
from diffuse.text.transformer import TextNetConfig, TextTransformer
from diffuse.text_model_folder import TextModelInfo, load_text_model, save_text_model

REPO = Path(__file__).resolve().parents[2]
IMAGE_MODEL = REPO / "models" / "mnist-unet"


def tiny_model(tmp_path: Path, dtype=torch.float32) -> tuple[Path, TextTransformer]:
    torch.manual_seed(0)
    cfg = TextNetConfig(vocab_size=3, width=16, depth=1, heads=2, max_length=8)
    net = TextTransformer(cfg)
    info = TextModelInfo(objective="mdlm", chars=("a", "b", "c"), network=cfg, schedule="cosine")
    return save_text_model(tmp_path / "model", net, info, dtype=dtype), net


def test_round_trip(tmp_path):
    folder, net = tiny_model(tmp_path)
    model = load_text_model(tmp_path)  # the run folder finds model/
    assert model.folder == folder and model.is_diffusion
    assert model.vocab.chars == ("a", "b", "c") and model.schedule.kind == "cosine"
    for k, v in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v)


def test_float16_storage_loads_as_float32(tmp_path):
    folder, net = tiny_model(tmp_path, torch.float16)
    model = load_text_model(folder)
    w = model.net.state_dict()["head.weight"]
    assert w.dtype == torch.float32
    assert torch.equal(w, net.state_dict()["head.weight"].half().float())


def test_image_folder_given_to_the_text_loader(tmp_path):
    with pytest.raises(ModelFileError, match="holds an image model, not a text model"):
        load_text_model(IMAGE_MODEL)


def test_text_folder_given_to_the_image_loaders(tmp_path):
    folder, _ = tiny_model(tmp_path)
    for load in (load_model, read_info):
        with pytest.raises(
            ModelFileError, match="is a text model, not an image model; use `diffuse text`"
        ):
            load(folder)


def test_existing_image_folders_still_load():
    assert read_info(IMAGE_MODEL).channels >= 1  # no "kind" key: an image model


def test_damaged_and_mismatched_folders(tmp_path):
    folder, _ = tiny_model(tmp_path)
    info = json.loads((folder / INFO_FILE).read_text())
    info["objective"] = "ar"  # the stored network is bidirectional
    (folder / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ModelFileError, match="does not match a network with causal = False"):
        load_text_model(folder)
    shutil.rmtree(folder)
    folder, _ = tiny_model(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_text_model(folder)
