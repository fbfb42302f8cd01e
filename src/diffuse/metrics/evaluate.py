"""Evaluate generated images against a dataset's held-out split.

Held-out split (one rule for every dataset): permute the indices of the shared training archive
with `numpy.random.default_rng(HELDOUT_SEED).permutation(N)` and take the LAST `HELDOUT_SIZE`
(5,000) permuted indices as the held-out set; the rest, in permuted order, is the training set.
The permutation matters because Fashion-MNIST and CIFAR-10 are stored sorted by class, so their
plain last 5,000 images would all come from the last classes. The project's classifiers are
trained only on the training part, and FD / KID / accuracy are measured against the held-out part.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from diffuse.data_files import (
    HELDOUT_SEED,
    HELDOUT_SIZE,
    heldout_indices,
    missing_data_message,
    shared_data_dir,
)
from diffuse.metrics.classifier import Classifier, load_classifier
from diffuse.metrics.frechet import feature_stats, frechet_distance
from diffuse.metrics.kid import kid
from diffuse.pipelines.sample import generate, load_trained, to_uint8

log = logging.getLogger(__name__)

__all__ = [
    "HELDOUT_SEED",
    "HELDOUT_SIZE",
    "DATASET_FILES",
    "DatasetSplit",
    "EvalResult",
    "balanced_labels",
    "classifier_outputs",
    "evaluate_images",
    "images_to_tensor",
    "heldout_indices",
    "load_samples",
    "load_split",
    "sample_model_for_eval",
]

# Dataset name -> archive in the shared data folder (see shared/data/README.md).
DATASET_FILES: dict[str, str] = {
    "mnist": "mnist-train.npz",
    "fashion-mnist": "fashion-mnist-train.npz",
    "cifar10": "cifar10-train.npz",
}


@dataclass(frozen=True)
class DatasetSplit:
    """A dataset split into training and held-out parts (uint8 NHWC images, int64 labels)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    heldout_images: np.ndarray
    heldout_labels: np.ndarray
    classes: tuple[str, ...]


def load_split(name: str, root: str | os.PathLike | None = None) -> DatasetSplit:
    """Load a shared dataset archive and split it by the module's held-out rule.

    Args:
        name: one of `DATASET_FILES`.
        root: folder of the archives; defaults to `diffuse.data_files.shared_data_dir()`
            ($DIFFUSE_DATA, else ../shared/data beside the repository root).

    Raises:
        ValueError: unknown dataset name.
        FileNotFoundError: the archive is missing (the message names the path, $DIFFUSE_DATA
            and the `diffuse data` command that makes the archive).
    """
    if name not in DATASET_FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_FILES)}")
    path = Path(root if root is not None else shared_data_dir()) / DATASET_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(missing_data_message(path, shared=root is None))
    with np.load(path) as d:
        images, labels, classes = d["images"], d["labels"], d["classes"]
    train_idx, held_idx = heldout_indices(len(images))
    return DatasetSplit(
        name=name,
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        heldout_images=images[held_idx],
        heldout_labels=labels[held_idx],
        classes=tuple(str(c) for c in classes),
    )


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Bring images into the classifiers' input format: float32 NCHW in [-1, 1].

    Args:
        images: uint8 NHWC array/tensor (0..255, as in the dataset archives) or a float tensor
            (N, C, H, W) already in [-1, 1].
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype == torch.uint8:
        if images.ndim != 4:
            raise ValueError(f"uint8 images must be (N, H, W, C), got shape {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (N, C, H, W)
    if not images.is_floating_point() or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 (N, H, W, C) or float (N, C, H, W) in [-1, 1], got "
            f"{images.dtype} of shape {tuple(images.shape)}"
        )
    return images.float()


@torch.no_grad()
def classifier_outputs(
    classifier: Classifier,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and features of a classifier over many images, batched, fp32.

    Args:
        classifier: a network from `load_classifier`.
        images: see `images_to_tensor`.
        batch_size: images per forward pass.

    Returns:
        (logits (N, num_classes), features (N, feature_dim)) on the CPU.
    """
    x = images_to_tensor(images)
    cfg = classifier.config
    if tuple(x.shape[1:]) != (cfg.in_channels, cfg.image_size, cfg.image_size):
        raise ValueError(
            f"images of shape {tuple(x.shape[1:])} (C, H, W) do not fit the classifier, which "
            f"expects {(cfg.in_channels, cfg.image_size, cfg.image_size)}"
        )
    device = next(classifier.parameters()).device
    logits, feats = [], []
    for i in range(0, x.shape[0], batch_size):
        lo, fe = classifier(x[i : i + batch_size].to(device))
        logits.append(lo.float().cpu())
        feats.append(fe.float().cpu())
    return torch.cat(logits), torch.cat(feats)


@dataclass(frozen=True)
class EvalResult:
    """Scores of generated images against a dataset's held-out split.

    Attributes:
        dataset: dataset name.
        n: number of generated images.
        fd: Frechet distance (classifier features) generated vs held-out.
        fd_floor: FD of `n_floor` real training images vs held-out: what a perfect model of the
            data would score with this sample size (FD is biased upward for small samples).
        kid, kid_std: KID (mean, std over subsets) generated vs held-out.
        kid_floor: KID of the same training subset vs held-out (~0).
        class_accuracy: fraction of generated images classified as their requested class, or
            None when no labels were given.
        classifier_accuracy: the classifier's own accuracy on the held-out images.
        n_heldout, n_floor: sizes of the held-out set and of the floor's training subset.
    """

    dataset: str
    n: int
    fd: float
    fd_floor: float
    kid: float
    kid_std: float
    kid_floor: float
    class_accuracy: float | None
    classifier_accuracy: float
    n_heldout: int
    n_floor: int

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def evaluate_images(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | None,
    dataset: str,
    *,
    classifier: Classifier | None = None,
    split: DatasetSplit | None = None,
    floor_size: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Score generated images with the dataset's classifier against its held-out split.

    Args:
        images: generated images, uint8 (N, H, W, C) or float (N, C, H, W) in [-1, 1].
        labels: requested class of each image (N,), or None for unconditional samples.
        dataset: one of `DATASET_FILES` (selects the data and the shipped classifier).
        classifier: override the shipped classifier (e.g. in tests).
        split: override the loaded data split (e.g. in tests).
        floor_size: training images used for the FD/KID floor; defaults to N (same sample size
            as the generated side, so the floor carries the same small-sample bias), capped at
            the training part's size.
        kid_subsets, kid_subset_size: KID subset draws.
        batch_size: images per classifier forward pass.
        device: where the classifier runs.

    Returns:
        An `EvalResult`.
    """
    if dataset not in DATASET_FILES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_FILES)}")
    n = int(images.shape[0])
    if n < 2:
        raise ValueError(f"need at least 2 generated images, got {n}")
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"got {labels.shape[0]} labels for {n} images")
    if classifier is None:
        classifier = load_classifier(dataset, device=device)
    if split is None:
        split = load_split(dataset)
    n_floor = min(floor_size or n, len(split.train_images))
    num_classes = classifier.config.num_classes
    if labels is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"requested labels span {int(labels.min())}..{int(labels.max())} but the {dataset} "
            f"classifier knows classes 0..{num_classes - 1}"
        )

    gen_logits, gen_feats = classifier_outputs(classifier, images, batch_size)
    ho_logits, ho_feats = classifier_outputs(classifier, split.heldout_images, batch_size)
    # The training part is already in permuted (random) order, so its head is a random subset.
    _, tr_feats = classifier_outputs(classifier, split.train_images[:n_floor], batch_size)
    log.info("features: generated %d, held-out %d, train %d", n, len(ho_feats), n_floor)

    ho_stats = feature_stats(ho_feats)
    gen_stats, tr_stats = feature_stats(gen_feats), feature_stats(tr_feats)
    fd = frechet_distance(gen_stats.mu, gen_stats.sigma, ho_stats.mu, ho_stats.sigma)
    fd_floor = frechet_distance(tr_stats.mu, tr_stats.sigma, ho_stats.mu, ho_stats.sigma)
    k = kid(gen_feats, ho_feats, subsets=kid_subsets, subset_size=kid_subset_size)
    k_floor = kid(tr_feats, ho_feats, subsets=kid_subsets, subset_size=kid_subset_size)

    class_acc = None
    if labels is not None:
        class_acc = float((gen_logits.argmax(1) == labels).float().mean())
    ho_labels = torch.from_numpy(np.asarray(split.heldout_labels, dtype=np.int64))
    clf_acc = float((ho_logits.argmax(1) == ho_labels).float().mean())
    return EvalResult(
        dataset=dataset,
        n=n,
        fd=fd,
        fd_floor=fd_floor,
        kid=k.mean,
        kid_std=k.std,
        kid_floor=k_floor.mean,
        class_accuracy=class_acc,
        classifier_accuracy=clf_acc,
        n_heldout=len(ho_feats),
        n_floor=n_floor,
    )


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """Requested classes for n samples: 0, 1, ..., num_classes - 1, 0, 1, ... (int64, (n,))."""
    return np.arange(n, dtype=np.int64) % num_classes


def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read generated samples saved as npz: uint8 NHWC `images` and optional int `labels`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the archive lacks `images` or has the wrong dtype/shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} does not exist")
    with np.load(path, allow_pickle=False) as d:
        if "images" not in d.files:
            raise ValueError(f"{path} has arrays {d.files}; expected 'images' (and 'labels')")
        images = d["images"]
        labels = d["labels"].astype(np.int64) if "labels" in d.files else None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"{path}: images must be uint8 (N, H, W, C), got {images.dtype} {list(images.shape)}"
        )
    return images, labels


def sample_model_for_eval(
    model_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Generate n class-balanced samples from a trained model folder for `evaluate_images`.

    Uses `diffuse.pipelines.sample` (`load_trained`, `generate`) with the sampler settings the
    model was saved with, unless overridden. Images are quantised to uint8 as a saved PNG would
    be, so the scores describe what users get.

    Args:
        model_dir: a model folder written by `diffuse train` (or its run folder).
        n: number of images.
        seed: first seed; sample i uses seed + i (per-sample noise, batch-size independent).
        steps: sampler steps (None: the model's default).
        guidance: classifier-free guidance scale (None: the model's default).
        batch_size: images per sampler call.
        device: where the model runs.

    Returns:
        (uint8 images (n, H, W, C), requested labels (n,) cycling 0..K-1, or None for
        unconditional models).
    """

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    model = load_trained(model_dir, device=device)
    defaults = model.info.sampling  # model_folder.SamplingDefaults
    steps = defaults.steps if steps is None else steps
    guidance = defaults.guidance if guidance is None else guidance
    labels = balanced_labels(n, model.num_classes) if model.num_classes else None
    chunks = []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x = generate(
            model.denoiser,
            model.shape,
            range(seed + start, seed + stop),
            labels=None if labels is None else labels[start:stop].tolist(),
            null_label=model.null_label,
            sampler=defaults.sampler,
            schedule=defaults.schedule,
            steps=steps,
            guidance=guidance if labels is not None else 1.0,
            device=device,
            batch_size=batch_size,
        )
        chunks.append(to_uint8(model.decode(x)))  # (B, H, W, C)
        log.info("sampled %d / %d images", stop, n)
    return np.concatenate(chunks), labels
