"""The saved-model folder: every shipped model loads with the same pixels as before; save/read
round trips; version 1 is read, an unknown version refused; broken files give one clear error,
also through the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.tiny_models import tiny_unet

from diffuse.cli import main
from diffuse.codecs.base import Codec, PromptEncoder
from diffuse.codecs.identity import IdentityCodec
from diffuse.codecs.text_encoder import TextEncoder
from diffuse.codecs.vae import VAE, VAEConfig, load_vae, save_vae
from diffuse.config import ProcessConfig, SampleConfig, load_recipe
from diffuse.io import MissingModelFileError, file_sha256
from diffuse.metrics import evaluate as ev
from diffuse.model_folder import (
    FORMAT,
    INFO_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    ModelInfo,
    SamplingDefaults,
    load_model,
    provenance,
    read_info,
    save_model,
)
from diffuse.pipelines.sample import generate, load_trained, to_uint8

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "diffuse" / "assets" / "models" / "shapes-t2i"
PIXELS = Path(__file__).parent / "data" / "shipped_model_pixels.npz"
PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """One thread: the recorded pixels were made on one (tests/conftest.py, `one_thread`)."""


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    """uint8 pixels of a 4-step generation of each shipped model, recorded before the folder
    format moved into model_folder (text models: seeds 0, 1; MNIST: seeds 0, 1, 2 drawing
    3, 7, 9)."""
    with np.load(PIXELS) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


@pytest.mark.parametrize(
    ("key", "folder"),
    [("shapes_t2i", BUNDLED), ("shapes_t2i_pixel", ROOT / "models" / "shapes-t2i-pixel")],
)
def test_shipped_text_models_give_the_recorded_pixels(key, folder, recorded, encoder) -> None:
    model = load_model(folder)
    assert model.info.format == 1 and model.info.text_encoder == "default"
    defaults = model.info.sampling
    latents = generate(
        model.denoiser,
        model.shape,
        [0, 1],
        cond=encoder.encode([PROMPT]).as_cond(),
        uncond=encoder.encode([""]).as_cond(),
        sampler=defaults.sampler,
        schedule=defaults.schedule,
        steps=4,
        guidance=defaults.guidance,
    )
    np.testing.assert_array_equal(to_uint8(model.decode(latents)), recorded[key])


def test_shipped_mnist_model_gives_the_recorded_pixels(recorded) -> None:
    model = load_model(ROOT / "models" / "mnist-unet")
    assert model.class_names == [str(i) for i in range(10)] and model.null_label == 10
    assert isinstance(model.codec, IdentityCodec) and model.info.sampling.guidance == 3.0
    defaults = model.info.sampling
    latents = generate(
        model.denoiser,
        model.shape,
        [0, 1, 2],
        labels=[3, 7, 9],
        null_label=model.null_label,
        sampler=defaults.sampler,
        schedule=defaults.schedule,
        steps=4,
        guidance=defaults.guidance,
    )
    np.testing.assert_array_equal(to_uint8(model.decode(latents)), recorded["mnist_unet"])


@pytest.mark.parametrize(("name", "latent"), [("shapes-vae", (4, 16, 16)), ("cifar10-vae", None)])
def test_shipped_vaes_load_as_codecs(name, latent) -> None:
    vae = load_vae(ROOT / "models" / name)
    assert isinstance(vae, Codec)
    shape = vae.latent_shape(64 if latent else 32)
    assert latent is None or shape == latent
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, vae.cfg.in_channels, 32, 32))
        assert z.shape[1:] == vae.latent_shape(32)
        assert vae.decode(z).shape == (1, vae.cfg.in_channels, 32, 32)


def test_shipped_codecs_and_encoder_satisfy_the_protocols(encoder) -> None:
    assert isinstance(IdentityCodec(3), Codec)
    assert isinstance(load_model(BUNDLED).codec, Codec)
    assert isinstance(encoder, PromptEncoder)
    assert not isinstance(object(), Codec)


# A tiny class-conditional model made in the test, saved with save_model.


TINY_INFO = ModelInfo(
    process=ProcessConfig(kind="edm", parametrization="edm", sigma_data=0.5),
    channels=1,
    image_size=8,
    class_names=("a", "b", "c"),
    sampling=SamplingDefaults(steps=3, guidance=1.5),
    recipe={"note": "made in a test"},
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_model(folder, tiny_unet(), TINY_INFO)
    return folder


def test_save_model_read_info_and_load_model_round_trip(tmp_path) -> None:
    before = os.umask(0o022)
    try:
        net = tiny_unet()
        folder = save_model(tmp_path / "m", net, TINY_INFO)
    finally:
        os.umask(before)
    info = read_info(folder)
    assert info == TINY_INFO and info.format == FORMAT and info.null_label == 3
    written = json.loads((folder / INFO_FILE).read_text())
    assert written["format"] == FORMAT and written["sampling"]["guidance"] == 1.5
    for path in folder.iterdir():  # the user's umask, not mkstemp's 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    model = load_model(folder)
    assert model.shape == (1, 8, 8) and model.num_classes == 3 and model.image_size == 8
    x, level = torch.randn(2, 1, 8, 8), torch.full((2,), 1.0)
    labels = {"class_labels": torch.tensor([0, 2])}
    with torch.no_grad():
        assert torch.equal(model.denoiser.net(x, level, **labels), net.eval()(x, level, **labels))
    # A second save replaces the folder whole, leaving no temporaries next to it.
    save_model(folder, net, dataclasses.replace(TINY_INFO, class_names=("x", "y", "z")))
    assert read_info(folder).class_names == ("x", "y", "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_model_copies_the_codec_of_a_latent_model(tmp_path) -> None:
    vae_dir = save_vae(
        VAE(VAEConfig(in_channels=1, base_channels=8, channel_mult=(1, 1, 2), num_groups=4)),
        tmp_path / "vae-src",
    )
    info = dataclasses.replace(TINY_INFO, channels=4, image_size=4)
    folder = save_model(tmp_path / "latent", tiny_unet(4, 4), info, codec_source=vae_dir)
    assert read_info(folder).codec == "vae" and (folder / "vae" / "vae.safetensors").is_file()
    model = load_model(folder)
    assert isinstance(model.codec, VAE) and model.image_size == 16
    with pytest.raises(ValueError, match="names the codec folder 'vae' but no codec_source"):
        save_model(tmp_path / "other", tiny_unet(4, 4), read_info(folder))
    weights = folder / "vae" / "vae.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated codec is named too
    with pytest.raises(ModelFileError, match="vae.safetensors: not a readable safetensors"):
        load_model(folder)


def test_format_1_folders_are_read(tmp_path, tiny_model) -> None:
    folder = tmp_path / "old"
    shutil.copytree(tiny_model, folder)
    v1 = {  # what the trainer wrote before version 2 (e.g. models/mnist-unet)
        "format": 1,
        "process": {"kind": "edm", "options": {}},
        "parametrization": "edm",
        "sigma_data": 0.5,
        "class_names": ["a", "b", "c"],
        "null_label": 3,
        "channels": 1,
        "image_size": 8,
        "sample": {"every_steps": 5, "seeds": [0, 1], "sampler": "heun", "steps": 7},
        "recipe": {"note": "old"},
    }
    (folder / INFO_FILE).write_text(json.dumps(v1))
    info = read_info(folder)
    assert info.format == 1 and info.codec == "" and info.text_encoder == ""
    assert info.sampling == SamplingDefaults(sampler="heun", steps=7)  # the rest: defaults
    assert load_model(folder).info == info
    for name in ("mnist-unet", "shapes-t2i-pixel"):
        assert read_info(ROOT / "models" / name).format == 1


def test_one_default_per_sampling_setting() -> None:
    # The recipe's [sample] defaults are what a model carries when a recipe sets none.
    recipe_defaults = SampleConfig()
    for f in dataclasses.fields(SamplingDefaults):
        assert getattr(recipe_defaults, f.name) == getattr(SamplingDefaults(), f.name), f.name
    overrides = ["data.source='procedural'", "sample.guidance=3.5", "process.weighting='min_snr'"]
    cfg = load_recipe(None, overrides)
    info = ModelInfo.from_recipe(cfg, class_names=["a"], channels=1, image_size=8)
    assert info.sampling == SamplingDefaults(guidance=3.5) and info.null_label == 1
    assert info.recipe["sample"]["guidance"] == 3.5
    assert info.process == dataclasses.replace(cfg.process, weighting="natural")  # loss only
    assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_provenance_records_the_weights_recipe_and_chain(tmp_path, tiny_model) -> None:
    record = provenance(tiny_model)
    assert record["weights_sha256"] == file_sha256(tiny_model / WEIGHTS_FILE)
    assert record["recipe"] == TINY_INFO.recipe and "base_model" not in record
    child = save_model(
        tmp_path / "child", tiny_unet(), dataclasses.replace(TINY_INFO, base_model=record)
    )
    assert provenance(child)["base_model"] == record


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": 99}, r"unknown format version 99"),
        ("{not json", r"damaged: not valid JSON"),
        ([1, 2], r"damaged: expected a JSON object"),
        ({"format": 2, "channels": 1}, r"damaged: missing key 'process'"),
    ],
)
def test_a_bad_info_file_is_one_error_naming_it(tmp_path, tiny_model, content, message) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / INFO_FILE).write_text(text)
    with pytest.raises(ModelFileError, match=message) as caught:
        load_model(folder)
    assert str(folder / INFO_FILE) in str(caught.value)


def _damage(folder: Path, how: str) -> str:
    """Break one file of a model folder copy; returns the name of the file broken."""
    weights = folder / WEIGHTS_FILE
    data = weights.read_bytes()
    if how == "empty":
        weights.write_bytes(b"")
    elif how == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif how == "header":
        weights.write_bytes(b"\x00" * 8 + data[8:])
    elif how == "missing":
        weights.unlink()
    else:
        (folder / INFO_FILE).write_text(
            json.dumps({**json.loads((folder / INFO_FILE).read_text()), "format": 7})
        )
        return INFO_FILE
    return WEIGHTS_FILE


DAMAGE = ["empty", "truncated", "header", "missing", "version"]


@pytest.mark.parametrize("how", DAMAGE)
def test_broken_weights_raise_one_model_file_error(tmp_path, tiny_model, how) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    name = _damage(folder, how)
    with pytest.raises(ModelFileError, match=name) as caught:
        load_trained(folder)  # the pipelines' name for load_model
    assert isinstance(caught.value, ValueError)
    assert how != "missing" or isinstance(caught.value, MissingModelFileError)


@pytest.mark.parametrize("how", DAMAGE)
def test_commands_report_a_broken_model_in_one_line(
    tmp_path, tiny_model, how, monkeypatch, capsys
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    name = _damage(folder, how)
    split = ev.DatasetSplit(
        "mnist",
        np.zeros((4, 8, 8, 1), np.uint8),
        np.zeros(4),
        np.zeros((4, 8, 8, 1), np.uint8),
        np.zeros(4),
        (),
    )
    monkeypatch.setattr(ev, "load_split", lambda dataset: split)  # eval checks the data first
    out = tmp_path / "out.png"
    commands = {
        "generate": [
            "generate",
            "a circle",
            "--model",
            str(folder),
            "-o",
            str(out),
            "--no-progress",
        ],
        "sample": ["sample", "--model", str(folder), "-n", "1", "-o", str(out)],
        "eval": ["eval", "--model", str(folder), "--dataset", "mnist", "-n", "2"],
    }
    for command, args in commands.items():
        assert main(args) == 2, command
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, (command, captured.err)
        assert lines[0].startswith(f"diffuse {command}: error: ")
        assert str(folder / name) in lines[0] or (how == "missing" and name in lines[0])
        assert "Traceback" not in captured.err and not out.exists()


def test_pipelines_and_the_model_folder_do_not_import_training_or_cli(fresh_imports) -> None:
    loaded = fresh_imports("import diffuse.pipelines.text_to_image, diffuse.model_folder")
    assert "diffuse.pipelines.text_to_image" in loaded
    bad = [m for m in loaded if m.startswith(("diffuse.training", "diffuse.cli"))]
    assert not bad, bad
