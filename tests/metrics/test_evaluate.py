"""Held-out split rule, data errors and the end-to-end evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffuse.metrics.classifier import Classifier, ClassifierConfig, load_classifier
from diffuse.metrics.evaluate import (
    DatasetSplit,
    evaluate_images,
    heldout_indices,
    images_to_tensor,
    load_split,
)


def test_heldout_split_is_fixed_disjoint_and_complete() -> None:
    tr, ho = heldout_indices(60_000)
    tr2, ho2 = heldout_indices(60_000)
    np.testing.assert_array_equal(ho, ho2)
    np.testing.assert_array_equal(tr, tr2)
    assert len(ho) == 5000 and len(tr) == 55_000
    assert np.array_equal(np.sort(np.concatenate([tr, ho])), np.arange(60_000))
    # The rule is "seeded permutation, then the last 5,000", pinned here so it never drifts.
    np.testing.assert_array_equal(ho, np.random.default_rng(0).permutation(60_000)[-5000:])
    with pytest.raises(ValueError, match="heldout"):
        heldout_indices(100, heldout=100)


def test_missing_data_and_unknown_dataset_raise_clearly(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="DIFFUSE_DATA"):
        load_split("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_split("svhn", root=tmp_path)


def test_images_to_tensor_formats() -> None:
    u8 = np.zeros((2, 5, 5, 3), np.uint8)
    u8[..., 0] = 255
    x = images_to_tensor(u8)
    assert x.shape == (2, 3, 5, 5) and x.dtype == torch.float32
    assert float(x[:, 0].min()) == 1.0 and float(x[:, 1].max()) == -1.0
    with pytest.raises(ValueError, match="uint8 images must be"):
        images_to_tensor(np.zeros((5, 5, 3), np.uint8))


def _fake_split(rng: np.random.Generator) -> DatasetSplit:
    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, n)

    (xt, yt), (xh, yh) = draw(600), draw(300)
    return DatasetSplit("mnist", xt, yt, xh, yh, tuple(str(i) for i in range(10)))


def test_evaluate_images_with_a_tiny_network() -> None:
    rng = np.random.default_rng(0)
    split = _fake_split(rng)
    torch.manual_seed(0)
    net = Classifier(ClassifierConfig(1, 8, 4, (8, 16), 10)).eval()
    same = split.train_images[300:600]  # another sample of the same distribution
    far = np.full((300, 8, 8, 1), 255, np.uint8)  # constant white images
    kw = dict(classifier=net, split=split, kid_subsets=10, kid_subset_size=100)
    r_same = evaluate_images(same, split.train_labels[300:600], "mnist", **kw)
    r_far = evaluate_images(far, None, "mnist", **kw)
    assert r_same.n == 300 and r_same.n_floor == 300 and r_same.n_heldout == 300
    assert r_far.class_accuracy is None and 0.0 <= r_same.class_accuracy <= 1.0
    assert all(math.isfinite(v) for v in (r_same.fd, r_same.fd_floor, r_same.kid))
    assert r_far.fd > 10 * r_same.fd_floor and r_far.kid > r_same.kid
    assert r_same.to_dict()["dataset"] == "mnist"
    with pytest.raises(ValueError, match="3 labels for 300 images"):
        evaluate_images(same, [1, 2, 3], "mnist", **kw)
    with pytest.raises(ValueError, match=r"span 0\.\.12 but"):
        evaluate_images(same, np.arange(300) % 13, "mnist", **kw)
    with pytest.raises(ValueError, match="do not fit the classifier"):
        evaluate_images(np.zeros((4, 9, 9, 1), np.uint8), None, "mnist", **kw)


def test_real_heldout_images_score_like_the_floor() -> None:
    """MNIST training images "generated" by a perfect model: FD near its floor, labels right."""
    try:
        split = load_split("mnist")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    net = load_classifier("mnist")
    imgs, labels = split.train_images[-1000:], split.train_labels[-1000:]
    r = evaluate_images(imgs, labels, "mnist", classifier=net, split=split, kid_subsets=20)
    assert r.class_accuracy > 0.99 and r.classifier_accuracy > 0.99
    assert r.fd < 2 * r.fd_floor + 1e-3
    assert abs(r.kid) < 5 * r.kid_std + 1e-4
