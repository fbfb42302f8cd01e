"""Checkpoints: round trip, pruning, damage detection, and kills during a write."""

import multiprocessing
import os
import signal
import time

import pytest
import torch

from diffuse.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    remove_stale_temporaries,
    save_checkpoint,
)


def _save(run, step, keep=None, hook=None):
    model = {"w": torch.full((3, 2), float(step)), "b": torch.arange(4)}
    state = {"step": step, "rng": torch.get_rng_state(), "nested": {"x": [1, 2.5, "s"]}}
    return save_checkpoint(
        run,
        step,
        model=model,
        ema=model,
        config={"step": step},
        state=state,
        keep=keep,
        _before_rename=hook,
    )


def test_round_trip_and_pruning(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    ck = load_checkpoint(latest_checkpoint(tmp_path))
    assert ck.step == 4 and ck.config == {"step": 4}
    torch.testing.assert_close(ck.model["w"], torch.full((3, 2), 4.0))
    assert ck.state["nested"] == {"x": [1, 2.5, "s"]}
    assert _save(tmp_path, 4) == ck.path  # an existing complete checkpoint is not rewritten


def test_failure_before_the_rename_leaves_nothing(tmp_path):
    _save(tmp_path, 1)

    def boom(tmp):
        assert (tmp / "manifest.json").exists()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2, hook=boom)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_damaged_checkpoint_is_refused_and_skipped(tmp_path):
    _save(tmp_path, 1)
    path = _save(tmp_path, 2)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    assert load_latest(tmp_path).step == 1
    (path / "manifest.json").unlink()
    assert latest_checkpoint(tmp_path).name == "step-1"


# The writer is forked from this process: it starts with torch already imported (a fresh
# interpreter spends seconds importing it) and dies by SIGKILL like any other process.
FORK = multiprocessing.get_context("fork")


def _write_checkpoints_until_killed(run: str, ready) -> None:
    """Save ever newer checkpoints of 4 MB tensors into `run`, forever (in a forked child)."""
    done = list_checkpoints(run)
    step = done[-1][0] + 1 if done else 1
    big = {"w": torch.randn(1024, 1024)}  # 4 MB per file: writes take a while
    ready.set()
    while True:
        big["w"].fill_(step)
        state = {"step": step, "v": torch.full((256, 256), float(step))}
        save_checkpoint(run, step, model=big, ema=big, config={"step": step}, state=state, keep=2)
        step += 1


def test_sigkill_during_writes_never_leaves_a_half_written_checkpoint(tmp_path):
    run = tmp_path / "run"
    delays = [0.05, 0.13, 0.31, 0.22]
    for delay in delays:
        ready = FORK.Event()
        child = FORK.Process(target=_write_checkpoints_until_killed, args=(str(run), ready))
        child.start()
        assert ready.wait(timeout=60), "the writer did not start"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        # Every committed checkpoint loads completely and is self-consistent.
        for step, path in list_checkpoints(run):
            ck = load_checkpoint(path)
            assert ck.step == step and float(ck.model["w"][0, 0]) == step
            assert ck.config == {"step": step} and float(ck.state["v"][0, 0]) == step
        remove_stale_temporaries(run)
    assert list_checkpoints(run), "the writer never committed a checkpoint"
