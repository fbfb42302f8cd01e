"""Save/load round trips (safetensors + JSON), error messages, presets and `diffuse info`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from diffuse import nets
from diffuse.cli import main
from diffuse.nets.flops import example_inputs, network_info
from diffuse.nets.io import CONFIG_FILE, WEIGHTS_FILE, load_network, save_network

from .conftest import randomize

CASES = {
    "unet": nets.unet_preset("unet-tiny", num_classes=3, context_dim=8, pooled_dim=4),
    "dit": nets.dit_preset("dit-tiny", context_dim=8, text_mode="joint", pos_embed="rope"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_round_trip_gives_identical_outputs(kind: str, tmp_path: Path) -> None:
    net = randomize(nets.build_network(CASES[kind])).eval()
    x, t, cond = example_inputs(net, 2)
    (tmp_path / "diffusion.json").write_text("{}")  # other files in the folder stay
    save_network(net, tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["kind"] == kind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, "diffusion.json"]
    )  # no temporary files left
    loaded = load_network(tmp_path)
    assert type(loaded) is type(net) and loaded.config == net.config
    with torch.no_grad():
        assert torch.equal(loaded(x, t, **cond), net(x, t, **cond))


def test_channels_last_weights_save(tmp_path: Path) -> None:
    net = randomize(nets.build_network(nets.get_config("unet-tiny"))).eval()
    net.to(memory_format=torch.channels_last)
    save_network(net, tmp_path)
    x, t, _ = example_inputs(net, 1)
    with torch.no_grad():
        assert torch.equal(load_network(tmp_path)(x, t), net(x, t))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_network(tmp_path)
    net = nets.build_network(nets.get_config("dit-tiny"))
    save_network(net, tmp_path)
    cfg_path = tmp_path / CONFIG_FILE
    meta = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**meta, "kind": "gan"}))
    with pytest.raises(ValueError, match="kind must be one of .* got 'gan'"):
        load_network(tmp_path)
    cfg_path.write_text(json.dumps({**meta, "config": {**meta["config"], "depht": 3}}))
    with pytest.raises(ValueError, match=r"DiTConfig has no fields \['depht'\]"):
        load_network(tmp_path)
    cfg_path.write_text(json.dumps({**meta, "config": {**meta["config"], "hidden_size": 128}}))
    with pytest.raises(ValueError, match="does not match its config"):
        load_network(tmp_path)
    cfg_path.write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        load_network(tmp_path)


def test_get_config_and_build() -> None:
    assert set(nets.PRESETS) >= {"unet-tiny", "unet-s", "unet-cifar", "unet-b", "dit-tiny"}
    assert {"dit-s/2", "dit-b/2", "dit-l/2", "dit-xl/2"} <= set(nets.PRESETS)
    with pytest.raises(ValueError, match="unknown network preset 'vit'"):
        nets.get_config("vit")
    with pytest.raises(TypeError, match="UNetConfig or DiTConfig"):
        nets.build_network(object())  # type: ignore[arg-type]
    # The training code fills data-dependent fields with dataclasses.replace.
    cfg = dataclasses.replace(
        nets.get_config("unet-s"), in_channels=1, out_channels=1, num_classes=10
    )
    assert cfg.num_classes == 10


def test_network_info_matches_published_counts() -> None:
    dit = network_info(nets.get_config("dit-s/2"), batch=2)
    assert dit.params == 32_858_896
    assert abs(dit.gflops / (2 * 6.06) - 1) < 0.02  # DiT paper: 6.06 GFLOPs (multiply-adds)
    unet = network_info(nets.get_config("unet-cifar"), size=32, batch=2)
    assert unet.params == 35_746_307
    assert 11.5 < unet.gflops < 13.5
    small = network_info(nets.get_config("unet-tiny"), size=8, channels=1, batch=4)
    assert small.channels == 1 and small.size == 8 and small.activation_bytes > 0
    with pytest.raises(ValueError, match="patch_size=2 does not divide image_size=7"):
        network_info(nets.get_config("dit-tiny"), size=7)


def test_cli_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "unet-tiny", "--size", "16", "--channels", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["channels"] == 1 and out["params"] > 0 and out["gflops"] > 0
    assert main(["info", "dit-tiny", "--batch", "4"]) == 0
    assert "GFLOPs" in capsys.readouterr().out
    assert main(["info", "nope"]) == 2
    assert "unknown network preset 'nope'" in capsys.readouterr().err
    assert main(["info", "unet-tiny", "--batch", "0"]) == 2
    assert "--batch must be >= 1, got 0" in capsys.readouterr().err
