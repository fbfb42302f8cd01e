"""Bad diffusers folders fail fast with one clear message, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest
from tests.interop.conftest import tiny_unet2d

from diffuse.interop import SUPPORTED_CLASSES, UnsupportedModelError, import_diffusers
from diffuse.io import MissingModelFileError, ModelFileError
from diffuse.model_folder import import_diffusers_folder, load_model


@pytest.fixture
def sd_copy(sd_folder, tmp_path):
    return shutil.copytree(sd_folder, tmp_path / "copy")


def _edit(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_unsupported_class_is_named_with_the_supported_list(sd_copy):
    _edit(sd_copy / "model_index.json", unet=["diffusers", "UNetSpatioTemporalConditionModel"])
    with pytest.raises(UnsupportedModelError) as err:
        import_diffusers(sd_copy)
    message = str(err.value)
    assert "'UNetSpatioTemporalConditionModel'" in message
    assert all(name in message for name in SUPPORTED_CLASSES)


def test_unsupported_config_value_is_named(sd_copy):
    _edit(sd_copy / "unet" / "config.json", class_embed_type="timestep")
    with pytest.raises(UnsupportedModelError, match="class_embed_type='timestep'"):
        import_diffusers(sd_copy)


def test_missing_component_folder(sd_copy):
    shutil.rmtree(sd_copy / "vae")
    with pytest.raises(MissingModelFileError, match="names component 'vae'"):
        import_diffusers(sd_copy)


def test_missing_weights(sd_copy):
    (sd_copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingModelFileError, match=r"no weights file \(\*\.safetensors\)"):
        import_diffusers(sd_copy)


def test_not_a_diffusers_folder(tmp_path):
    with pytest.raises(MissingModelFileError, match="neither model_index.json nor config.json"):
        import_diffusers(tmp_path)


def test_shape_mismatch_names_the_file_and_tensor(sd_copy):
    _edit(sd_copy / "unet" / "config.json", cross_attention_dim=24)
    with pytest.raises(ModelFileError, match="does not match its config.json.*size mismatch"):
        import_diffusers(sd_copy)


def test_missing_tensor_is_named(sd_copy):
    _edit(sd_copy / "unet" / "config.json", layers_per_block=2)
    with pytest.raises(ModelFileError, match="does not match its config.json: missing"):
        import_diffusers(sd_copy)


def test_pickle_only_checkpoint_is_refused_with_the_reason(tmp_path):
    tiny_unet2d().save_pretrained(tmp_path / "unet", safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(UnsupportedModelError, match="only pickle weights.*runs code"):
        import_diffusers(tmp_path / "unet")


def test_ckpt_next_to_a_pipeline_is_refused(sd_copy):
    weights = sd_copy / "text_encoder" / "model.safetensors"
    weights.rename(weights.with_suffix(".ckpt"))
    with pytest.raises(UnsupportedModelError, match=r"\['model.ckpt'\]"):
        import_diffusers(sd_copy)


def test_failed_conversion_writes_nothing(sd_copy, tmp_path):
    _edit(sd_copy / "unet" / "config.json", cross_attention_dim=24)
    with pytest.raises(ModelFileError):
        import_diffusers_folder(sd_copy, tmp_path / "out")
    with pytest.raises(ModelFileError):
        load_model(sd_copy)  # the on-the-fly conversion as well
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    assert not any((tmp_path / "cache").rglob("diffusion.json"))


@pytest.mark.parametrize(
    ("remove", "error", "match"),
    [
        ("unet/config.json", MissingModelFileError, r"unet/config.json: file missing"),
        ("scheduler/scheduler_config.json", MissingModelFileError, "no scheduler_config.json"),
        ("tokenizer", MissingModelFileError, "names component 'tokenizer'"),
        ("vae/diffusion_pytorch_model.safetensors", MissingModelFileError, "no weights file"),
    ],
)
def test_each_missing_file_is_named(sd_copy, remove, error, match):
    path = sd_copy / remove
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(error, match=match):
        import_diffusers(sd_copy)


def test_damaged_config_is_named(sd_copy):
    (sd_copy / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"unet/config.json is damaged: not valid JSON"):
        import_diffusers(sd_copy)


def test_pickle_unet_in_a_pipeline_is_refused(sd_copy):
    weights = sd_copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(UnsupportedModelError, match=r"only pickle weights.*safetensors only"):
        import_diffusers(sd_copy)


def test_weights_of_another_shape_in_the_vae_are_named(sd_copy):
    _edit(sd_copy / "vae" / "config.json", latent_channels=8)
    with pytest.raises(ModelFileError, match=r"vae/diffusion_pytorch_model.safetensors does not"):
        import_diffusers(sd_copy)
