"""The text trainer: both objectives train, validate, export and resume exactly."""

import json
from pathlib import Path

import pytest
import torch

from diffuse.cli import main
from diffuse.config import ConfigError, TextTrainConfig, load_recipe
from diffuse.data_files import read_text_corpus, text_split
from diffuse.text_model_folder import load_text_model
from diffuse.training.text_loop import _TextSteps, train_text

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40


def recipe(tmp_path: Path, objective: str, *extra: str) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    path = tmp_path / f"tiny-{objective}.toml"
    path.write_text(
        f"""
[text]
objective = "{objective}"
preset = "text-tiny"
width = 16
depth = 1
heads = 2
length = 16
[data]
path = "corpus.txt"
[optim]
batch_size = 4
lr = 3e-3
[train]
steps = 4
threads = 1
[checkpoint]
every_steps = 2
[log]
every_steps = 1
[eval]
every_steps = 2
windows = 4
times = 2
"""
        + "\n".join(extra)
    )
    return path


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_train_validate_export(tmp_path, objective, one_thread):
    cfg = load_recipe(recipe(tmp_path, objective))
    assert isinstance(cfg, TextTrainConfig)
    result = train_text(cfg, tmp_path / "run", progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_bpc" in r] == [2, 4]
    assert ("val_bpc_se" in records[-1]) == (objective == "mdlm")
    model = load_text_model(result.model_dir)
    assert model.info.objective == objective and model.net.config.causal == (objective == "ar")
    assert model.info.validation["bits_per_char"] == pytest.approx(records[-1]["val_bpc"], abs=1e-4)
    assert "".join(model.vocab.chars) == "".join(sorted(set(CORPUS)))


def test_resume_continues_the_same_run(tmp_path, one_thread):
    path = recipe(tmp_path, "mdlm")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", str(path), "--out", str(straight), "--no-progress"]) == 0
    assert (
        main(["train", str(path), "--out", str(split), "--no-progress", "--set", "train.steps=2"])
        == 0
    )
    assert (
        main(
            [
                "train",
                str(path),
                "--out",
                str(split),
                "--no-progress",
                "--resume",
                "--set",
                "train.steps=4",
            ]
        )
        == 0
    )
    assert losses(split) == pytest.approx(losses(straight), rel=1e-6)
    a = load_text_model(straight).net.state_dict()
    b = load_text_model(split).net.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_both_objectives_see_the_same_windows(tmp_path):
    """Equal training tokens by construction: the batches depend on the seed and step only."""
    batches = []
    for objective in ("mdlm", "ar"):
        cfg = load_recipe(recipe(tmp_path, objective))
        corpus = read_text_corpus(cfg.data.path)
        steps = _TextSteps(cfg, tmp_path, torch.device("cpu"), corpus)
        batches.append([steps.batch(i) for i in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_split_rule_and_bad_recipes(tmp_path):
    train, val = text_split("abcdefghij")
    assert (train, val) == ("abcdefghi", "j")  # the last 10%
    with pytest.raises(ConfigError, match="time_conditioning"):
        load_recipe(recipe(tmp_path, "ar"), ["text.time_conditioning=true"])
    with pytest.raises(ConfigError, match="eval.every_steps = 3 .* multiple of log.every_steps"):
        load_recipe(recipe(tmp_path, "mdlm"), ["log.every_steps=2", "eval.every_steps=3"])
    with pytest.raises(ConfigError, match="'mdlm', 'ar'"):
        load_recipe(recipe(tmp_path, "gpt"))
