"""Small CNN classifiers used as in-domain feature extractors and class-accuracy judges.

The project trains one classifier per dataset (MNIST, Fashion-MNIST, CIFAR-10) with
`benchmarks/train_classifiers.py` and ships the weights as safetensors + JSON under
`diffuse/assets/classifiers/`. Each network takes images in [-1, 1], NCHW, and returns both the
logits and the penultimate (globally pooled) features, so that one forward pass serves the
Frechet distance, KID and the "classified as the requested class" score.

Architecture: a ResNet-style stack of stages. Each stage is a 3x3 conv that changes the width,
BatchNorm, ReLU, 2x2 max-pool, then one residual block of two 3x3 convs. Global average pooling
gives the feature vector, a linear layer the logits.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from diffuse.io import atomic_path, atomic_write_text, load_safetensors

__all__ = [
    "ClassifierConfig",
    "Classifier",
    "CLASSIFIER_DATASETS",
    "classifier_dir",
    "load_classifier",
    "save_classifier",
]

# Datasets that ship a trained classifier under `diffuse/assets/classifiers/<name>.safetensors`.
CLASSIFIER_DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of a `Classifier`.

    Attributes:
        in_channels: image channels (1 for MNIST-like data, 3 for CIFAR-10).
        image_size: height = width of the input images.
        stem_width: channels of the first 3x3 conv, at full resolution.
        widths: channels of each stage; every stage halves the resolution.
        num_classes: number of output logits.
        classes: class names, index = label (informational).
    """

    in_channels: int = 1
    image_size: int = 28
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 64, 128)
    num_classes: int = 10
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.classes and len(self.classes) != self.num_classes:
            raise ValueError(
                f"classes has {len(self.classes)} names but num_classes={self.num_classes}"
            )
        if not self.widths:
            raise ValueError("widths must name at least one stage")

    @property
    def feature_dim(self) -> int:
        """Length of the penultimate feature vector."""
        return self.widths[-1]

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        """Build from a dict, ignoring keys that are not fields (e.g. training metadata)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (no bias, BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """x + f(x) with f = two conv-BN(-ReLU) layers; the second BN starts at zero scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.bn2(self.conv2(self.conv1(x))))


class Classifier(nn.Module):
    """CNN classifier returning logits and penultimate features.

    Args:
        config: network shape.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = _conv_bn(config.in_channels, config.stem_width)
        stages: list[nn.Module] = []
        c = config.stem_width
        for w in config.widths:
            stages.append(nn.Sequential(_conv_bn(c, w), nn.MaxPool2d(2), _Residual(w)))
            c = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c, config.num_classes)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Kaiming-normal convs (ReLU gain); the last BN of each residual branch starts at zero
        so every block is the identity at init (Goyal et al. 2017, "zero-gamma"), which makes
        the short CPU training runs converge faster; a small zero-bias linear head."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _Residual):
                nn.init.zeros_(m.bn2.weight)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features.

        Args:
            x: images in [-1, 1], shape (N, C, H, W).

        Returns:
            (N, feature_dim) globally average-pooled activations of the last stage.
        """
        h = self.stages(self.stem(x))  # (N, widths[-1], H / 2^S, W / 2^S)
        return h.mean(dim=(2, 3))  # (N, widths[-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify images.

        Args:
            x: images in [-1, 1], shape (N, C, H, W).

        Returns:
            (logits (N, num_classes), features (N, feature_dim)).
        """
        feats = self.features(x)
        return self.head(feats), feats


def classifier_dir() -> Path:
    """Folder holding the shipped classifier weights (`<dataset>.safetensors` + `.json`)."""
    return Path(str(resources.files("diffuse") / "assets" / "classifiers"))


def save_classifier(
    model: Classifier,
    path: str | os.PathLike,
    metadata: dict | None = None,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write `path` (.safetensors) and the config next to it (.json), each atomically.

    Args:
        model: the classifier; its state dict (incl. BatchNorm running stats) is stored.
        path: destination ending in `.safetensors`.
        metadata: extra JSON-serialisable facts (split, accuracy, command) stored in the JSON
            under "training".
        dtype: storage dtype of floating-point tensors; fp16 halves the shipped files and
            changes held-out accuracy by less than its noise (loading casts back to fp32).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
        # BatchNorm's counter is unused in eval mode (momentum is set); keep the file minimal.
        if not k.endswith("num_batches_tracked")
    }
    doc = {"config": model.config.to_dict(), "training": metadata or {}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    atomic_write_text(path.with_suffix(".json"), json.dumps(doc, indent=2) + "\n")


def load_classifier(
    dataset_or_path: str | os.PathLike, device: str | torch.device = "cpu"
) -> Classifier:
    """Load a classifier in eval mode.

    Args:
        dataset_or_path: a shipped dataset name (one of `CLASSIFIER_DATASETS`) or a path to a
            `.safetensors` file with its `.json` config beside it.
        device: where to put the network.

    Returns:
        The network, in eval mode, with gradients disabled.

    Raises:
        FileNotFoundError: the weights or the config are missing (the message says how to make
            them).
        ValueError: an unknown dataset name.
        ModelFileError: an empty, truncated or damaged weights file (named in the message).
    """
    name = str(dataset_or_path)
    if name in CLASSIFIER_DATASETS:
        path = classifier_dir() / f"{name}.safetensors"
    elif name.endswith(".safetensors") or os.sep in name or "/" in name:
        path = Path(name)
    else:
        raise ValueError(
            f"no classifier for dataset {name!r}; shipped: {', '.join(CLASSIFIER_DATASETS)} "
            "(or pass a path to a .safetensors file)"
        )
    cfg_path = path.with_suffix(".json")
    for p in (path, cfg_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"classifier file {p} is missing; train it with "
                "`python benchmarks/train_classifiers.py` (see docs/benchmarks.md, Classifiers)"
            )
    doc = json.loads(cfg_path.read_text())
    config = ClassifierConfig.from_dict(doc["config"])
    model = Classifier(config)
    state = load_safetensors(path)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise ValueError(
            f"classifier weights {path} do not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    model.load_state_dict(state, strict=False)  # only num_batches_tracked is absent
    model.to(device).eval().requires_grad_(False)
    return model
