"""`--resume` continues with the run's own settings; overrides on resume are checked and logged;
the progress ETA honours the time budget; log lines go around the bar."""

from __future__ import annotations

import io
import json
import logging
import math
import sys

import pytest

from diffuse.cli import main
from diffuse.config import RESUMABLE_CHANGES, ConfigError
from diffuse.training.progress import Progress, eta_seconds
from diffuse.training.run_folder import resumable_keys, run_recipe

SETS = [
    "model.preset='unet-tiny'",
    "model.overrides={base_channels=8, num_groups=4, head_channels=8}",
    "data.source='procedural'",
    "data.resolution=8",
    "data.size=16",
    "data.channels=1",
    "optim.batch_size=4",
    "optim.lr=0.003",
    "train.steps=2",
    "train.threads=1",
    "log.every_steps=1",
    "checkpoint.every_steps=1",
]


def _args(recipe, out, *sets):
    pairs = [x for s in sets for x in ("--set", s)]
    return ["train", str(recipe), "--out", str(out), "--no-progress", *pairs]


def test_plain_resume_keeps_the_runs_overrides_not_the_recipe_files(tmp_path, caplog):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[optim]\nlr = 0.001\n")
    out = tmp_path / "run"
    assert main(_args(recipe, out, *SETS)) == 0
    recipe.write_text("[optim]\nlr = 0.5\n")  # the file changes after the run started
    caplog.set_level(logging.INFO)
    assert main([*_args(recipe, out, "train.steps=3"), "--resume"]) == 0
    stored = json.loads((out / "run.json").read_text())["config"]
    assert stored["optim"]["lr"] == 0.003 and stored["train"]["steps"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert "train.steps = 3 (was 2)" in caplog.text  # overrides on resume are listed
    # An override that would change the trajectory is refused, naming what may change.
    assert main([*_args(recipe, out, "optim.lr=0.1"), "--resume"]) == 2


def test_resume_overrides_outside_the_allowed_list_are_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config": {"train": {"steps": 5}}}))
    assert run_recipe(out, ["train.max_minutes=2", "log.every_steps=3"]).train.max_minutes == 2
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.5.*only train.steps, "):
        run_recipe(out, ["optim.lr=0.5"])
    assert run_recipe(out, ["optim.lr=0.001"]).optim.lr == 0.001  # the run's value: no change
    with pytest.raises(FileNotFoundError, match="holds no training run"):
        run_recipe(tmp_path, [])


def test_the_allowed_list_in_messages_is_the_real_one():
    shown = resumable_keys().split(", ")
    assert shown == [p + "*" if p.endswith(".") else p for p in RESUMABLE_CHANGES]
    assert "train.max_minutes" in shown  # allowed, and so listed


def test_eta_is_the_sooner_of_steps_and_budget():
    assert eta_seconds(100, 2.0) == 50.0
    assert eta_seconds(100, 2.0, budget_left_s=20.0) == 20.0
    assert eta_seconds(100, 2.0, budget_left_s=90.0) == 50.0
    assert eta_seconds(100, 0.0, budget_left_s=30.0) == 30.0
    assert eta_seconds(100, 0.0) == math.inf
    assert eta_seconds(100, 2.0, budget_left_s=-5.0) == 0.0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_go_through_tqdm_write_while_the_bar_is_shown(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    before = root.level
    root.setLevel(logging.INFO)
    try:
        bar = Progress(10, 0, enabled=True, budget_s=60.0)
        assert bar.bar is not None
        assert handler not in root.handlers  # swapped for tqdm's handler while the bar lives
        bar.update(3, 0.5, 10.0)
        logging.getLogger("diffuse.test").info("a log line")
        bar.close()
        assert handler in root.handlers
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
    # tqdm.write clears the bar line first, so the message stands alone on its line.
    pieces = [p.strip() for p in terminal.getvalue().replace("\r", "\n").splitlines()]
    assert "a log line" in pieces
    assert "eta=" in terminal.getvalue()
