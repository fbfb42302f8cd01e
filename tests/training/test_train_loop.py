"""The training loop: exact resume after SIGKILL, 2-rank gloo == 1 process, guards, refusals."""

import json
import multiprocessing
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from tests.tiny_models import TINY_PIXEL_RECIPE

from diffuse.cli.train import draw_sample_grid
from diffuse.config import ConfigError, load_recipe
from diffuse.nets.unet import UNet
from diffuse.training import checkpoint, progress
from diffuse.training.checkpoint import list_checkpoints
from diffuse.training.loop import NonFiniteError, train
from diffuse.training.model import build_network

BASE = [
    *TINY_PIXEL_RECIPE,
    "data.flip=true",
    "optim.batch_size=8",
    "optim.micro_batch=3",
    "optim.warmup_steps=2",
    "optim.schedule='cosine'",
    "train.steps=12",
    "log.every_steps=1",
    "log.progress=false",
    "checkpoint.every_steps=4",
    "checkpoint.keep=5",
    "ema.halflife_images=40",
]


def _cfg(*extra):
    return load_recipe(None, [*BASE, *extra])


def _losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


# Child processes are forked from this one: they start with torch and diffuse already imported
# (a fresh interpreter spends seconds importing them) and run the same code a fresh one would.
FORK = multiprocessing.get_context("fork")


def _train_until_killed(mode: str, run: str) -> None:
    """Train the BASE recipe in this (forked) process and SIGKILL it at the point `mode` names."""
    if mode == "after-step-6":
        write = progress.MetricsLog.write

        def write_then_die(self, record):
            write(self, record)
            if record["step"] == 6:
                os.kill(os.getpid(), signal.SIGKILL)

        progress.MetricsLog.write = write_then_die
    else:  # die in the middle of writing checkpoint step-8
        synced = checkpoint._write_synced

        def die_during_write(path, data):
            if "step-8" in str(path) and path.name == "state.pt":
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            synced(path, data)

        checkpoint._write_synced = die_during_write
    train(load_recipe(None, BASE), run)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, one_thread) -> Path:
    """The BASE recipe trained without interruption (12 steps)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train(_cfg(), run).step == 12
    return run


@pytest.mark.parametrize("mode", ["after-step-6", "during-checkpoint-8"])
def test_resume_after_sigkill_repeats_the_loss_sequence(tmp_path, reference_run, mode):
    expected = _losses(reference_run)
    assert len(expected) == 12

    run = tmp_path / "killed"
    child = FORK.Process(target=_train_until_killed, args=(mode, str(run)))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL, child.exitcode
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps == [4], steps  # step-8 was never committed in the second mode
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(), run)

    train(_cfg(), run, resume=True)
    assert _losses(run) == expected  # exactly, not approximately
    final_ref = load_file(str(reference_run / "checkpoints" / "step-12" / "ema.safetensors"))
    final = load_file(str(run / "checkpoints" / "step-12" / "ema.safetensors"))
    for key in final_ref:
        assert torch.equal(final_ref[key], final[key])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, run: str, sets: list[str]) -> None:
    os.environ.update(LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        train(load_recipe(None, sets), run)
    finally:
        torch.distributed.destroy_process_group()


GLOO_SETS = [*BASE, "train.steps=5", "checkpoint.every_steps=5", "optim.micro_batch=2"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, one_thread) -> Path:
    """GLOO_SETS trained in one process (5 steps)."""
    run = tmp_path_factory.mktemp("one") / "run"
    train(load_recipe(None, GLOO_SETS), run)
    return run


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process(tmp_path, one_process_run, strategy):
    two = [*GLOO_SETS, f"train.strategy='{strategy}'"]
    args = (_free_port(), str(tmp_path / "two"), two)
    mp.start_processes(_rank_main, args=args, nprocs=2, join=True, start_method="fork")
    assert (tmp_path / "two" / "model" / "diffusion.json").is_file()
    for name in ("model.safetensors", "ema.safetensors"):
        one = load_file(str(one_process_run / "checkpoints" / "step-5" / name))
        two = load_file(str(tmp_path / "two" / "checkpoints" / "step-5" / name))
        for key in one:
            torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=0)
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(one_process_run), rtol=1e-5)


class _NanNet(UNet):
    """Returns NaN on the calls listed in `bad` (counting forward calls)."""

    def __init__(self, cfg, bad):
        super().__init__(cfg)
        self.bad, self.calls = bad, 0

    def forward(self, x, c_noise, **kw):
        self.calls += 1
        out = super().forward(x, c_noise, **kw)
        return out * float("nan") if self.calls in self.bad or -1 in self.bad else out


def _nan_builder(bad):
    def build(model_cfg, **shape):
        cfg = build_network(model_cfg, **shape)[1]
        return _NanNet(cfg, bad), cfg

    return build


def test_nonfinite_steps_are_skipped_counted_and_stop_training(tmp_path):
    # micro_batch=3 with 8 images: 3 forward calls per step; call 4 is in step 2.
    result = train(_cfg("train.steps=4"), tmp_path / "a", net_builder=_nan_builder({4}))
    assert result.nonfinite_steps == 1 and result.step == 4
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite"] for r in lines] == [0, 1, 1, 1]
    with pytest.raises(NonFiniteError, match=r"3 non-finite steps in a row.*Lower optim.lr"):
        train(_cfg("optim.max_nonfinite=3"), tmp_path / "b", net_builder=_nan_builder({-1}))


def test_output_folder_of_another_run_is_refused_and_untouched(tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.steps=4"), run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="already holds a training run"):
        train(_cfg("train.steps=4"), run)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.5"):
        train(_cfg("train.steps=4", "optim.lr=0.5"), run, resume=True)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no diffuse run"):
        train(_cfg(), foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # More steps on resume is allowed and continues from the last checkpoint.
    result = train(_cfg("train.steps=6"), run, resume=True)
    assert result.step == 6 and len(_losses(run)) == 6


def test_bad_data_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="none.npz not found.*diffuse data"):
        train(_cfg("data.source='npz'", f"data.path='{tmp_path}/none.npz'"), out)
    assert not out.exists()


def test_cli_dry_run_and_errors(tmp_path, capsys):
    from diffuse.cli import main

    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nsource = "procedural"\n[optim]\nlr = 2e-4\n[train]\nsteps = 3\n')
    assert main(["train", str(recipe), "--dry-run", "--set", "optim.batch_size=64"]) == 0
    out = capsys.readouterr().out
    assert "lr = 0.0002" in out and "batch_size = 64" in out and "[sample]" in out
    assert main(["train", str(recipe), "--dry-run", "--set", "optim.lrr=1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.toml"), "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_model_folder_and_sample_cli(tmp_path, capsys):
    from PIL import Image

    from diffuse.cli import main
    from diffuse.pipelines.sample import load_trained

    result = train(
        _cfg("train.steps=2", "sample.every_steps=2", "sample.seeds=[0, 1, 2]", "sample.steps=2"),
        tmp_path / "run",
        on_sample=draw_sample_grid,
    )
    assert (tmp_path / "run" / "samples" / "step-0000002.png").is_file()
    model = load_trained(tmp_path / "run")
    assert model.class_names == ["shapes-0", "shapes-1", "shapes-2"] and model.shape == (1, 8, 8)
    assert result.model_dir == tmp_path / "run" / "model"
    out = tmp_path / "grid.png"
    args = [
        "sample",
        "--model",
        str(tmp_path / "run"),
        "--class",
        "1",
        "-n",
        "3",
        "--steps",
        "2",
        "--seeds",
        "5-7",
        "-o",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert Image.open(out).size == (3 * 10 + 2, 12)
    again = tmp_path / "again.png"
    assert main([*args[:-1], str(again)]) == 0
    assert Image.open(out).tobytes() == Image.open(again).tobytes()  # same seeds, same images
    out = tmp_path / "new.png"  # sample refuses an existing file before anything else
    assert main(["sample", "--model", str(tmp_path / "run"), "--class", "9", "-o", str(out)]) == 2
    assert "not a class of this model" in capsys.readouterr().err
    assert main(["sample", "--model", str(tmp_path), "-o", str(out)]) == 2
    assert "holds no trained model" in capsys.readouterr().err


def test_time_budget_stops_with_a_checkpoint_and_a_model(tmp_path):
    result = train(_cfg("train.max_minutes=1e-6", "log.every_steps=2"), tmp_path / "run")
    assert result.step == 2
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    assert (tmp_path / "run" / "model" / "diffusion.json").is_file()


def test_init_starts_from_a_trained_model_and_refuses_another_network(tmp_path):
    train(_cfg("train.steps=4", "optim.lr=0.05", "ema.halflife_images=1"), tmp_path / "base")
    trained = load_file(str(tmp_path / "base" / "model" / "model.safetensors"))
    init = f"train.init='{tmp_path}/base/model'"

    def distance_after_one_step(*extra):  # a step of lr 1e-6 moves no weight by more than ~1e-6
        run = tmp_path / f"run{len(extra)}"
        train(_cfg("train.steps=1", "optim.lr=1e-6", *extra), run)
        ((_, step_one),) = list_checkpoints(run)
        tuned = load_file(str(step_one / "model.safetensors"))
        assert trained.keys() == tuned.keys()
        return max((trained[k] - tuned[k]).abs().max().item() for k in trained)

    assert distance_after_one_step(init) < 1e-5 < 1e-2 < distance_after_one_step()
    # The model records where it started: the base's folder, weight hash and recipe.
    base = json.loads((tmp_path / "run1" / "model" / "diffusion.json").read_text())["base_model"]
    base_info = json.loads((tmp_path / "base" / "model" / "diffusion.json").read_text())
    assert base["path"] == f"{tmp_path}/base/model" and base["recipe"] == base_info["recipe"]
    assert len(base["weights_sha256"]) == 64 and "base_model" not in base
    assert "base_model" not in json.loads((tmp_path / "run0/model/diffusion.json").read_text())
    # Another architecture, a missing folder: clear errors, nothing written.
    out = tmp_path / "bad"
    wider = "model.overrides={base_channels=16, num_groups=4, head_channels=8}"
    with pytest.raises(ConfigError, match=r"train.init.*base_channels: 8 there, 16 here"):
        train(_cfg(wider, init), out)
    with pytest.raises(ConfigError, match=r"train.init = '.*nowhere'.*no config.json"):
        train(_cfg(f"train.init='{tmp_path}/nowhere'"), out)
    assert not out.exists()
