"""`diffuse eval`: argument errors and the --samples path (tiny network, fake data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.metrics import evaluate as ev
from diffuse.metrics.classifier import Classifier, ClassifierConfig
from diffuse.model_folder import SamplingDefaults


@pytest.fixture
def tiny_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the shipped MNIST classifier and data by a tiny network and random 8x8 data."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 400)
    split = ev.DatasetSplit("mnist", images[:200], labels[:200], images[200:], labels[200:], ())
    torch.manual_seed(0)
    net = Classifier(ClassifierConfig(1, 8, 4, (8, 16), 10)).eval()
    monkeypatch.setattr(ev, "load_split", lambda name: split)
    monkeypatch.setattr(ev, "load_classifier", lambda name, device="cpu": net)


def _write_samples(path, n: int, labels: bool = True) -> None:
    rng = np.random.default_rng(1)
    arrays = {"images": rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)}
    if labels:
        arrays["labels"] = np.arange(n) % 10
    np.savez(path, **arrays)


def test_eval_samples_prints_table_and_json(tiny_world, tmp_path, capsys) -> None:
    path = tmp_path / "s.npz"
    _write_samples(path, 100)
    assert main(["eval", "--samples", str(path), "--dataset", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "FD" in out and "KID" in out and "class accuracy" in out
    assert main(["eval", "--samples", str(path), "--dataset", "mnist", "-n", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 50 and result["n_floor"] == 50 and result["dataset"] == "mnist"


def test_eval_user_errors_exit_2_with_messages(tiny_world, tmp_path, capsys) -> None:
    path = tmp_path / "s.npz"
    _write_samples(path, 20, labels=False)
    assert main(["eval", "--samples", str(path), "--dataset", "mnist", "-n", "30"]) == 2
    assert "exceeds the 20 images" in capsys.readouterr().err
    assert main(["eval", "--samples", str(tmp_path / "none.npz"), "--dataset", "mnist"]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", pixels=np.zeros(3))
    assert main(["eval", "--samples", str(tmp_path / "bad.npz"), "--dataset", "mnist"]) == 2
    assert "expected 'images'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of --model / --samples is required
        main(["eval", "--dataset", "mnist"])


def test_eval_model_samples_through_the_pipeline(tiny_world, monkeypatch, capsys) -> None:
    """--model: seeds seed+i, labels cycling 0..9, the model's sampler defaults, uint8 output."""
    from types import SimpleNamespace

    calls = []
    model = SimpleNamespace(
        denoiser=None,
        shape=(1, 8, 8),
        num_classes=10,
        null_label=10,
        info=SimpleNamespace(sampling=SamplingDefaults(steps=3, guidance=1.5)),
        decode=lambda x: x,  # pixel space: the identity codec
    )

    def fake_generate(denoiser, shape, seeds, *, labels=None, steps=25, guidance=1.0, **kw):
        calls.append((list(seeds), labels, steps, guidance))
        lab = torch.tensor(labels, dtype=torch.float32)
        return (lab / 9 * 2 - 1).view(-1, 1, 1, 1).expand(-1, *shape)  # (B, C, H, W)

    monkeypatch.setattr(ev, "load_trained", lambda folder, device="cpu": model)
    monkeypatch.setattr(ev, "generate", fake_generate)
    images, labels = ev.sample_model_for_eval("somewhere", 25, seed=100, batch_size=10)
    assert images.shape == (25, 8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(25) % 10)
    assert [c[0][0] for c in calls] == [100, 110, 120] and calls[-1][0][-1] == 124
    assert all(c[2] == 3 and c[3] == 1.5 for c in calls)  # the model's saved defaults
    assert images[9, 0, 0, 0] == 255 and images[10, 0, 0, 0] == 0
    assert main(["eval", "--model", "x", "--dataset", "mnist", "-n", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20


def test_eval_checks_the_dataset_before_sampling(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DIFFUSE_DATA", str(tmp_path))  # no archive there
    sampled = []
    monkeypatch.setattr(ev, "sample_model_for_eval", lambda *a, **k: sampled.append(1))
    assert main(["eval", "--model", str(tmp_path), "--dataset", "mnist", "-n", "4"]) == 2
    err = capsys.readouterr().err
    assert "mnist-train.npz not found" in err and "DIFFUSE_DATA" in err
    assert not sampled  # it failed before any sampling
