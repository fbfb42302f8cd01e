"""Where the dataset archives are, and which of their images are held out for evaluation.

Training (`diffuse.training.data`), evaluation (`diffuse.metrics.evaluate`) and the `diffuse
data` command all read these, so they sit below both: one place decides where the shared
datasets are found ($DIFFUSE_DATA), what a missing archive's error says, and the held-out split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffuse.text.vocab import CharVocab

__all__ = [
    "HELDOUT_SEED",
    "HELDOUT_SIZE",
    "SHARED_PREFIX",
    "STANDARD_ARCHIVES",
    "TextCorpus",
    "TEXT_VALIDATION_FRACTION",
    "heldout_indices",
    "missing_data_message",
    "read_text_corpus",
    "resolve_data_path",
    "shared_data_dir",
    "shared_data_file",
    "text_split",
]

SHARED_PREFIX = "shared:"


def shared_data_dir() -> Path:
    """The shared data folder: $DIFFUSE_DATA, else ../shared/data beside the repository root.

    This is the one place that decides where tests, benchmarks and recipes find the shared
    datasets (see shared/data/README.md).
    """
    env = os.environ.get("DIFFUSE_DATA")
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]  # src/diffuse/data_files.py -> repo
    return repo_root.parent / "shared" / "data"


# The archives `diffuse data` makes from the official distributions: file name -> the command
# (without its output) that writes it. Recipes name them as `shared:NAME`.
STANDARD_ARCHIVES: dict[str, str] = {
    "mnist-train.npz": "diffuse data mnist MNIST_FOLDER",
    "mnist-test.npz": "diffuse data mnist MNIST_FOLDER --split test",
    "fashion-mnist-train.npz": "diffuse data fashion-mnist FASHION_MNIST_FOLDER",
    "fashion-mnist-test.npz": "diffuse data fashion-mnist FASHION_MNIST_FOLDER --split test",
    "cifar10-train.npz": "diffuse data cifar10 cifar-10-binary.tar.gz",
    "cifar10-test.npz": "diffuse data cifar10 cifar-10-binary.tar.gz --split test",
}


def missing_data_message(path: str | Path, shared: bool = True) -> str:
    """The error text for a dataset archive that is not there: where it was looked for and
    the `diffuse data` command that makes it.

    Args:
        path: the archive looked for.
        shared: it was looked for in the shared data folder ($DIFFUSE_DATA), not at a path
            the user gave.
    Returns:
        One message, e.g. "data file /x/mnist-train.npz not found (...); make it with: ...".
    """
    path = Path(path)
    make = STANDARD_ARCHIVES.get(path.name, "diffuse data folder IMAGE_FOLDER")
    if shared:
        env = os.environ.get("DIFFUSE_DATA")
        origin = f"$DIFFUSE_DATA={env}" if env else "$DIFFUSE_DATA is unset, so ../shared/data"
        where = f" (looked in {path.parent}: {origin}; set DIFFUSE_DATA to the folder holding it)"
    else:
        where = f" (looked in {path.parent}; the shared datasets are found through $DIFFUSE_DATA)"
    return (
        f"data file {path} not found{where}; make it from the official files with: "
        f"{make} --out {path} (see README, Training data)"
    )


def shared_data_file(name: str) -> Path:
    """Path of `name` inside `shared_data_dir()`.

    Raises:
        FileNotFoundError: absent; the message names the folder, $DIFFUSE_DATA and the
            `diffuse data` command that makes the file.
    """
    path = shared_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(missing_data_message(path))
    return path


def resolve_data_path(path: str) -> Path:
    """A recipe's data path: 'shared:NAME' is looked up in the shared folder, else as given."""
    if path.startswith(SHARED_PREFIX):
        return shared_data_file(path[len(SHARED_PREFIX) :])
    return Path(path).expanduser()


# The held-out rule, one for every dataset (training excludes exactly what evaluation uses):
# permute range(N) with numpy's default_rng(HELDOUT_SEED), hold out the LAST `heldout` indices.
# A permutation, not the plain tail, because Fashion-MNIST and CIFAR-10 are stored sorted by class.
HELDOUT_SEED = 0
HELDOUT_SIZE = 5000


def heldout_indices(
    n: int, heldout: int = HELDOUT_SIZE, seed: int = HELDOUT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split `range(n)` into (train, held-out) index arrays by the rule above.

    Args:
        n: dataset size.
        heldout: size of the held-out part.
        seed: seed of the permutation.
    Returns:
        (train_idx [n - heldout], heldout_idx [heldout]) int64 arrays, in permuted order.
    """
    if not 0 < heldout < n:
        raise ValueError(f"heldout={heldout} must be in (0, n={n})")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n - heldout], perm[n - heldout :]


# The held-out rule of a text corpus: the LAST `validation_fraction` of its characters (the
# usual tiny-shakespeare split: first 90% train, last 10% validation). A contiguous tail, not a
# random sample, so no validation window overlaps a training window.
TEXT_VALIDATION_FRACTION = 0.1


def text_split(text: str, validation_fraction: float = TEXT_VALIDATION_FRACTION) -> tuple[str, str]:
    """Split a corpus into (train, validation) by the rule above.

    Args:
        text: the whole corpus.
        validation_fraction: the share held out, in (0, 1).
    Returns:
        (text[:n], text[n:]) with n = int((1 - validation_fraction) * len(text)).
    Raises:
        ValueError: a fraction outside (0, 1) or a split that leaves a part empty.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must be in (0, 1)")
    n = int((1.0 - validation_fraction) * len(text))
    if n == 0 or n == len(text):
        raise ValueError(
            f"a text of {len(text)} characters is too short to hold out {validation_fraction:.0%}"
        )
    return text[:n], text[n:]


@dataclass
class TextCorpus:
    """A text corpus split by `text_split`: its vocabulary and both splits as token ids."""

    vocab: CharVocab
    train: torch.Tensor  # [T_train] int64
    validation: torch.Tensor  # [T_val] int64


def read_text_corpus(
    path: str, validation_fraction: float = TEXT_VALIDATION_FRACTION, vocab: CharVocab | None = None
) -> TextCorpus:
    """Read a UTF-8 text file and split it by `text_split`.

    Args:
        path: a file, or `shared:NAME` in the shared data folder.
        validation_fraction: the held-out tail.
        vocab: the vocabulary to encode with (a trained model's); None builds it from every
            character of the whole file, so the validation split holds no unknown character.
    Raises:
        FileNotFoundError: no such file (naming where it was looked for).
        UnknownCharactersError: `vocab` lacks characters of the file (listing them).
    """
    file = resolve_data_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"text corpus {file} not found (data path {path!r})")
    text = file.read_text(encoding="utf-8")
    train, val = text_split(text, validation_fraction)
    vocab = vocab or CharVocab.from_text(text)
    return TextCorpus(vocab, vocab.encode(train), vocab.encode(val))
