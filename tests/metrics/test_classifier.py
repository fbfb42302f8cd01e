"""Classifier networks: shapes, save/load, clear errors, and the shipped MNIST classifier."""

from __future__ import annotations

import json

import pytest
import torch

from diffuse.metrics.classifier import (
    Classifier,
    ClassifierConfig,
    classifier_dir,
    load_classifier,
    save_classifier,
)
from diffuse.metrics.evaluate import classifier_outputs, load_split

TINY = ClassifierConfig(in_channels=3, image_size=16, stem_width=4, widths=(8, 16), num_classes=5)


def test_forward_shapes_and_features() -> None:
    net = Classifier(TINY).eval()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    logits, feats = net(x)
    assert logits.shape == (3, 5)
    assert feats.shape == (3, TINY.feature_dim) == (3, 16)
    torch.testing.assert_close(net.features(x), feats)
    torch.testing.assert_close(net.head(feats), logits)


def test_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    net = Classifier(TINY)
    net.train()
    net(torch.randn(8, 3, 16, 16))  # move the BatchNorm running statistics off their init
    net.eval()
    path = tmp_path / "tiny.safetensors"
    save_classifier(net, path, {"note": "test"}, dtype=torch.float32)
    loaded = load_classifier(path)
    assert loaded.config == TINY and not loaded.training
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(loaded(x)[0], net(x)[0])
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["training"] == {"note": "test"}
    # fp16 storage (the default for shipped files) stays close.
    save_classifier(net, path)
    torch.testing.assert_close(load_classifier(path)(x)[0], net(x)[0], atol=1e-2, rtol=1e-2)


def test_missing_weights_and_unknown_names_raise_clearly(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="train_classifiers.py"):
        load_classifier(tmp_path / "absent.safetensors")
    save_classifier(Classifier(TINY), tmp_path / "w.safetensors")
    (tmp_path / "w.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"w\.json is missing"):
        load_classifier(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="shipped: mnist"):
        load_classifier("imagenet")


def test_mismatched_weights_raise(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    save_classifier(Classifier(TINY), path)
    other = ClassifierConfig(3, 16, 4, (8, 16, 32), 5)
    doc = json.loads(path.with_suffix(".json").read_text())
    doc["config"] = other.to_dict()
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="do not match"):
        load_classifier(path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_shipped_weights_are_small_and_loadable(name: str) -> None:
    path = classifier_dir() / f"{name}.safetensors"
    assert path.is_file(), f"{path} missing: run benchmarks/train_classifiers.py"
    assert path.stat().st_size < 3_000_000
    net = load_classifier(name)
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["training"]["heldout_accuracy"] > {"mnist": 0.99, "fashion-mnist": 0.9}.get(
        name, 0.7
    )
    assert len(net.config.classes) == 10


def test_shipped_mnist_classifier_scores_above_99_percent_on_heldout() -> None:
    try:
        split = load_split("mnist")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    net = load_classifier("mnist")
    logits, _ = classifier_outputs(net, split.heldout_images[:2000])
    labels = torch.from_numpy(split.heldout_labels[:2000])
    acc = float((logits.argmax(1) == labels).float().mean())
    assert acc > 0.99
