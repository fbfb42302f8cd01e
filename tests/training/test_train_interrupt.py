"""Ctrl-C during `diffuse train`: one line, exit status 130, an intact checkpoint, a resume."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffuse.cli import main
from diffuse.training.checkpoint import list_checkpoints
from diffuse.training.loop_state import latest_step
from diffuse.training.run_loop import TrainingInterrupted, interruptible

SRC = str(Path(__file__).resolve().parents[2] / "src")
SETS = [
    "model.preset='unet-tiny'",
    "model.overrides={base_channels=8, num_groups=4, head_channels=8}",
    "data.source='procedural'",
    "data.resolution=8",
    "data.size=16",
    "data.channels=1",
    "optim.batch_size=4",
    "train.steps=100000",
    "train.threads=1",
    "log.every_steps=1",
    "checkpoint.every_steps=2",
]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_prints_one_line_exits_130_and_resume_continues(tmp_path, capsys, caplog):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("[train]\nsteps = 100000\n")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "diffuse", "train", str(recipe), "--out", str(out)]
    args += [x for s in SETS for x in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    # Ctrl-C reaches the command even where this suite runs in a background job (which starts
    # with SIGINT ignored, and a process started from it would inherit that).
    child = subprocess.Popen(
        args,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(out) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert list_checkpoints(out), "no checkpoint was written"
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:  # a failed test leaves no training running
            child.kill()
            child.wait()
    err = stderr.decode()
    assert child.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert " INFO diffuse.training." in err  # the command logs the library's progress on stderr
    lines = [x for x in err.splitlines() if x.startswith("interrupted")]
    assert len(lines) == 1, err[-2000:]
    done = latest_step(out)
    step = int(lines[0].split()[3].rstrip(";"))
    assert done is not None and step >= done
    assert lines[0].endswith(f"continue with: diffuse train {recipe} --out {out} --resume")
    # The checkpoint is complete, and the printed command continues from it (run here through
    # the function behind the `diffuse` command, sparing a second interpreter start).
    resume = lines[0].split("continue with: diffuse ")[1].split()
    resume += ["--set", f"train.steps={done + 1}", "--no-progress"]
    caplog.set_level(logging.INFO, logger="diffuse")
    assert main(resume) == 0, capsys.readouterr().err[-2000:]
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed from")]
    assert resumed and resumed[0].endswith(f"(step {done})"), caplog.text
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == list(range(1, done + 2))


def test_a_stray_ctrl_c_names_the_newest_checkpoint(tmp_path):
    with pytest.raises(TrainingInterrupted) as caught, interruptible(tmp_path / "none"):
        raise KeyboardInterrupt
    assert (caught.value.step, caught.value.checkpoint_step) == (0, None)
    assert isinstance(caught.value, KeyboardInterrupt)
