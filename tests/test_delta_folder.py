"""Delta model folders: only the tensors that differ from a base model are stored, with the
base's weights hash and where to find it (a bundled model by name, else a relative path); the
codec is the base's when it is the same; loading gives the whole network bit for bit; a missing
or different base is one clear error naming both."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tests.tiny_models import tiny_unet

from diffuse import nets
from diffuse.cli import main
from diffuse.codecs.vae import VAE, VAEConfig, save_vae
from diffuse.config import ProcessConfig
from diffuse.io import MissingModelFileError, file_sha256
from diffuse.model_folder import (
    BASE_CODEC,
    DELTA_FORMAT,
    FORMAT,
    INFO_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    ModelInfo,
    SamplingDefaults,
    load_model,
    load_model_network,
    read_info,
    save_model,
)
from diffuse.nets.io import save_network

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "diffuse" / "assets" / "models"
INFO = ModelInfo(
    process=ProcessConfig(kind="edm", parametrization="edm", sigma_data=0.5),
    channels=1,
    image_size=8,
    class_names=("a", "b", "c"),
    sampling=SamplingDefaults(steps=2, guidance=1.5),
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """Tiny networks: one thread (tests/conftest.py, `one_thread`)."""


def _tuned(net: nets.UNet, prefix: str = "conv_out.") -> nets.UNet:
    """A copy of `net` with the parameters under `prefix` moved (the rest as they were)."""
    tuned = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name.startswith(prefix):
                p.add_(0.01 * torch.randn_like(p))
    return tuned


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_delta_stores_what_differs_and_loads_bit_for_bit(tmp_path) -> None:
    base = save_model(tmp_path / "base", tiny_unet(), INFO)
    tuned = _tuned(load_model_network(base), "conv_out.")
    folder = save_model(tmp_path / "runs" / "delta", tuned, INFO, base=base)
    assert set(load_file(str(folder / WEIGHTS_FILE))) == {"conv_out.weight", "conv_out.bias"}
    written = json.loads((folder / INFO_FILE).read_text())
    assert written["format"] == DELTA_FORMAT and written["delta"]["path"] == "../../base"
    assert json.loads((base / INFO_FILE).read_text())["format"] == FORMAT  # full: version 2
    assert read_info(folder).delta.weights_sha256 == written["delta"]["weights_sha256"]
    assert _same(load_model(folder).denoiser.net, tuned)
    # A delta on a delta: the chain is followed, each link checked.
    again = _tuned(tuned, "up.0.")
    second = save_model(tmp_path / "second", again, INFO, base=folder)
    assert all(k.startswith("up.0.") for k in load_file(str(second / WEIGHTS_FILE)))
    assert _same(load_model(second).denoiser.net, again)
    # The pair moves together: the base is found relative to the delta.
    shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-moved")
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    assert _same(load_model(moved / "second").denoiser.net, again)


def test_a_missing_or_other_base_is_one_error_naming_both(tmp_path, capsys) -> None:
    base = save_model(tmp_path / "base", tiny_unet(), INFO)
    folder = save_model(tmp_path / "delta", _tuned(load_model_network(base)), INFO, base=base)
    save_model(tmp_path / "base", tiny_unet(seed=1), INFO)  # another model where the base was
    with pytest.raises(ModelFileError, match=r"delta was fine-tuned from base weights sha256"):
        load_model(folder)
    out = tmp_path / "out.png"
    assert main(["sample", "--model", str(folder), "-n", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and "'../base'" in err[0]
    want = read_info(folder).delta.weights_sha256[:12]
    assert want in err[0] and "has weights sha256" in err[0] and not out.exists()
    # A delta made to name itself as its base (its own weights' hash): refused, no recursion.
    loop = json.loads((folder / INFO_FILE).read_text())
    loop["delta"] = {"weights_sha256": file_sha256(folder / WEIGHTS_FILE), "path": "."}
    shutil.copytree(folder, tmp_path / "loop")
    (tmp_path / "loop" / INFO_FILE).write_text(json.dumps(loop))
    with pytest.raises(ModelFileError, match="chain of base models loops"):
        load_model(tmp_path / "loop")
    (tmp_path / "loop" / INFO_FILE).write_text(json.dumps(loop | {"codec": BASE_CODEC}))
    with pytest.raises(ModelFileError, match="chain of base models loops"):
        load_model(tmp_path / "loop")
    shutil.rmtree(tmp_path / "base")
    with pytest.raises(MissingModelFileError, match=r"delta stores only what differs.*missing"):
        load_model(folder)
    assert main(["sample", "--model", str(folder), "-n", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and str(tmp_path / "base") in err[0]


def test_the_codec_is_the_bases_when_it_is_the_same_and_copied_otherwise(tmp_path) -> None:
    def vae(seed: int) -> Path:
        torch.manual_seed(seed)
        config = VAEConfig(in_channels=1, base_channels=8, channel_mult=(1, 1, 2), num_groups=4)
        return save_vae(VAE(config), tmp_path / f"vae{seed}")

    info = dataclasses.replace(INFO, channels=4, image_size=4)
    base = save_model(tmp_path / "base", tiny_unet(4, 4), info, codec_source=vae(0))
    tuned = _tuned(load_model_network(base))
    same = save_model(tmp_path / "same", tuned, info, codec_source=tmp_path / "vae0", base=base)
    assert read_info(same).codec == BASE_CODEC and not (same / "vae").exists()
    model = load_model(same)
    assert isinstance(model.codec, VAE) and model.image_size == 16
    assert _same(model.codec, load_model(base).codec)
    other = save_model(tmp_path / "other", tuned, info, codec_source=vae(1), base=base)
    assert read_info(other).codec == "vae" and (other / "vae" / "vae.safetensors").is_file()
    # A base that is a bare network folder (no diffusion.json, so no codec): copied too.
    bare = save_network(tiny_unet(4, 4), tmp_path / "bare")
    delta = save_model(tmp_path / "on-bare", tuned, info, codec_source=tmp_path / "vae0", base=bare)
    assert read_info(delta).codec == "vae" and _same(load_model(delta).denoiser.net, tuned)


def test_a_delta_on_the_bundled_model_names_it_and_generates(tmp_path) -> None:
    bundled = BUNDLED / "shapes-t2i"
    info = read_info(bundled)
    tuned = _tuned(load_model_network(bundled), "conv_out.")
    folder = save_model(tmp_path / "delta", tuned, info, codec_source=bundled / "vae", base=bundled)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", INFO_FILE, WEIGHTS_FILE]
    written = json.loads((folder / INFO_FILE).read_text())
    assert written["delta"]["bundled"] == "shapes-t2i" and "path" not in written["delta"]
    assert written["codec"] == BASE_CODEC
    assert (folder / WEIGHTS_FILE).stat().st_size < 20_000  # conv_out only, not 12 MB
    assert _same(load_model(folder).denoiser.net, tuned)
    # Commands that take --model work on it unchanged: generate, and inpaint (training-free).
    out = tmp_path / "out.png"
    args = ["generate", "a red circle", "--model", str(folder), "--steps", "2", "-o", str(out)]
    assert main([*args, "--no-progress"]) == 0 and out.is_file()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "mask.png")
    args = ["inpaint", str(out), "a blue square", "--mask", str(tmp_path / "mask.png")]
    args += ["--model", str(folder), "--steps", "2", "-o", str(tmp_path / "filled.png")]
    assert main([*args, "--no-progress"]) == 0 and (tmp_path / "filled.png").is_file()
