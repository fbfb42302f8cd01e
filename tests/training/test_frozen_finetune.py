"""Fine-tuning with `train.frozen`: the named parameters keep the weights of `train.init` (no
optimizer state, EMA equal to them), and the exported model folder is a delta folder that
stores only the trained tensors and loads to the very network the run held."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.tiny_models import TINY_PIXEL_RECIPE

from diffuse.cli import main
from diffuse.config import ConfigError, load_recipe
from diffuse.model_folder import DELTA_FORMAT, load_model
from diffuse.training.checkpoint import list_checkpoints
from diffuse.training.loop import train

BASE = [
    *TINY_PIXEL_RECIPE,
    "optim.batch_size=8",
    "optim.warmup_steps=0",
    "optim.lr=0.01",
    "log.every_steps=1",
    "log.progress=false",
    "ema.halflife_images=16",
    "ema.rampup=0",
]
FROZEN = ("up.", "upsample.", "mid1.")


def _cfg(*extra):
    return load_recipe(None, [*BASE, *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """A base model (3 steps) and a fine-tune of it with the decoder and mid1 frozen."""
    root = tmp_path_factory.mktemp("frozen")
    train(_cfg("train.steps=3", "checkpoint.every_steps=3"), root / "base")
    frozen = "train.frozen=[" + ", ".join(f"'{p}'" for p in FROZEN) + "]"
    sets = ["train.steps=4", "checkpoint.every_steps=4", f"train.init='{root}/base/model'", frozen]
    train(_cfg(*sets), root / "tuned")
    return root


def _is_frozen(name: str) -> bool:
    return name.startswith(FROZEN)


def test_frozen_parameters_keep_the_init_weights_and_get_no_optimizer_state(runs):
    base = load_file(str(runs / "base" / "model" / "model.safetensors"))
    ((_, ckpt),) = list_checkpoints(runs / "tuned")
    held = load_file(str(ckpt / "model.safetensors"))
    ema = load_file(str(ckpt / "ema.safetensors"))
    frozen = sorted(k for k in base if _is_frozen(k))
    assert frozen and all(torch.equal(held[k], base[k]) for k in frozen)
    assert all(torch.equal(ema[k], base[k]) for k in frozen)
    trained = [k for k in base if not _is_frozen(k)]
    assert all(not torch.equal(held[k], base[k]) for k in trained)  # lr 0.01 moves every one
    state = torch.load(ckpt / "state.pt", weights_only=True)
    with_state = set(state["optimizer"]["state"])
    assert with_state == set(trained)  # AdamW holds moments of the trained parameters only


def test_the_model_folder_is_a_delta_that_loads_to_the_trained_network(runs):
    folder = runs / "tuned" / "model"
    stored = load_file(str(folder / "model.safetensors"))
    base = load_file(str(runs / "base" / "model" / "model.safetensors"))
    assert set(stored) == {k for k in base if not _is_frozen(k)}
    info = json.loads((folder / "diffusion.json").read_text())
    assert info["format"] == DELTA_FORMAT and info["delta"]["path"] == "../../base/model"
    ((_, ckpt),) = list_checkpoints(runs / "tuned")
    ema = load_file(str(ckpt / "ema.safetensors"))
    net = load_model(folder).denoiser.net
    loaded = net.state_dict()
    assert loaded.keys() == ema.keys()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)  # bit for bit
    # The weights file holds the trained tensors only: its size is theirs plus a small header.
    size = (folder / "model.safetensors").stat().st_size
    tensor_bytes = sum(v.numel() * v.element_size() for v in stored.values())
    full = sum(v.numel() * v.element_size() for v in base.values())
    assert tensor_bytes <= size < tensor_bytes + 16_384 and tensor_bytes < 0.5 * full


def test_sample_and_info_work_on_the_delta_folder(runs, tmp_path, capsys):
    folder = runs / "tuned" / "model"
    out = tmp_path / "grid.png"
    args = ["sample", "--model", str(folder), "-o", str(out), "-n", "2", "--steps", "2"]
    assert main([*args, "--no-progress"]) == 0 and out.is_file()
    assert main(["info", "--model", str(folder), "--batch", "1"]) == 0
    said = capsys.readouterr().out
    assert "a delta on base '../../base/model'" in said and "parameters" in said
    assert main(["info", "--model", str(folder), "--batch", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["stored"]["delta"]["path"] == "../../base/model"


def test_a_fine_tune_can_start_from_a_delta_folder(runs, tmp_path):
    frozen = "train.frozen=['down.']"
    init = f"train.init='{runs}/tuned/model'"
    train(_cfg("train.steps=1", "checkpoint.every_steps=1", init, frozen), tmp_path / "again")
    chained = load_model(tmp_path / "again" / "model").denoiser.net.state_dict()
    first = load_model(runs / "tuned" / "model").denoiser.net.state_dict()
    down = [k for k in first if k.startswith("down.")]
    assert down and all(torch.equal(chained[k], first[k]) for k in down)
    info = json.loads((tmp_path / "again" / "model" / "diffusion.json").read_text())
    assert info["delta"]["path"].endswith("tuned/model")


def test_an_unknown_frozen_prefix_is_refused_before_anything_is_written(runs, tmp_path):
    init = f"train.init='{runs}/base/model'"
    with pytest.raises(ConfigError, match=r"train.frozen: 'upp.' matches no parameter.*up\."):
        train(_cfg("train.steps=1", init, "train.frozen=['up.', 'upp.']"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match=r"train.frozen = \['up.'\].*needs train.init"):
        _cfg("train.frozen=['up.']")


def test_a_resumed_frozen_run_repeats_the_uninterrupted_one(runs, tmp_path):
    frozen = "train.frozen=[" + ", ".join(f"'{p}'" for p in FROZEN) + "]"
    sets = ["checkpoint.every_steps=2", f"train.init='{runs}/base/model'", frozen]
    train(_cfg("train.steps=2", *sets), tmp_path / "split")
    train(_cfg("train.steps=4", *sets), tmp_path / "split", resume=True)

    def losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    assert losses(tmp_path / "split") == losses(runs / "tuned")
    resumed = load_model(tmp_path / "split" / "model").denoiser.net.state_dict()
    whole = load_model(runs / "tuned" / "model").denoiser.net.state_dict()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
