"""Where training images come from: npz archives, image folders, procedural data and the
captioned Shapes scenes, each mapping an index to an `Example` (uint8 HWC pixels, a label, an
optional caption); `build_dataset` picks one from a recipe's [data] table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffuse.config import DataConfig
from diffuse.data_files import (
    heldout_indices,
    missing_data_message,
    resolve_data_path,
)
from diffuse.shapes.clip_dataset import MovingShapesDataset
from diffuse.shapes.dataset import ShapesDataset

logger = logging.getLogger(__name__)

__all__ = [
    "AnyDataset",
    "ClipsDataset",
    "DataError",
    "Example",
    "FolderDataset",
    "IMAGE_SUFFIXES",
    "NpzDataset",
    "ProceduralDataset",
    "ScenesDataset",
    "build_dataset",
    "content_digest",
    "folder_labels",
    "image_files",
]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class DataError(ValueError):
    """Missing, corrupt or unusable training data."""


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@dataclass
class Example:
    """One training item: pixels uint8 [H, W, C], label (-1: none), optional caption."""

    image: np.ndarray
    label: int = -1
    caption: str | None = None


class NpzDataset:
    """An npz archive with `images` (uint8 NHWC), `labels` (int) and `classes` (names).

    Args:
        path: the archive.
        holdout: leave out `holdout` images by the held-out rule (`heldout_indices`).
        limit: keep only the first `limit` images (0: all).
    Raises:
        FileNotFoundError: the file does not exist.
        DataError: the file is not a readable npz or its arrays have the wrong shape/dtype.
    """

    def __init__(self, path: str | Path, holdout: int = 0, limit: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(missing_data_message(path, shared=False))
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = {"images", "labels"} - set(archive.files)
                if missing:
                    raise DataError(
                        f"{path} lacks array(s) {sorted(missing)}; found {archive.files} "
                        "(expected images, labels, classes)"
                    )
                images = archive["images"]
                labels = archive["labels"]
                classes = archive["classes"] if "classes" in archive.files else None
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise DataError(f"cannot read {path}: it is not a valid npz archive ({err})") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"{path}: images must be uint8 [N, H, W, C] with C 1 or 3, got "
                f"{images.dtype} {list(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise DataError(f"{path}: labels shape {list(labels.shape)} != [{images.shape[0]}]")
        if holdout >= images.shape[0]:
            raise DataError(f"{path}: no images left after holdout={holdout} of {len(images)}")
        keep = heldout_indices(len(images), holdout)[0] if holdout else np.arange(len(images))
        if limit:
            keep = keep[:limit]
        self.images = images[keep]
        self.labels = labels[keep].astype(np.int64)
        if classes is not None:
            self.class_names = [str(c) for c in classes]
        else:
            self.class_names = [str(i) for i in range(int(labels.max()) + 1)]
        self.num_classes = len(self.class_names)
        if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
            raise DataError(f"{path}: labels outside 0..{self.num_classes - 1}")
        self.channels = int(images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """A short hash of which images (by label sequence and shape) this dataset holds."""
        return content_digest(str(self.images.shape), self.labels.tobytes())

    def __getitem__(self, i: int) -> Example:
        return Example(self.images[i], int(self.labels[i]))


class FolderDataset:
    """Images under a folder (png, jpg, jpeg, webp; searched recursively, in sorted order).

    Labels come from the first-level sub-folder names (sorted, index = label) when every image
    lies in a sub-folder; otherwise the data is unlabelled. Captions come from a sidecar
    `NAME.txt` beside the image, or from `metadata.jsonl` lines {"file_name": ..., "text": ...}
    (or "caption") in any folder, file names relative to that folder.

    Unreadable files are skipped (logged with a count); none readable is an error.
    """

    def __init__(self, root: str | Path, holdout: int = 0, limit: int = 0) -> None:
        root = Path(root)
        files = image_files(root)
        readable, bad = [], []
        for p in files:
            (readable if _image_ok(p) else bad).append(p)
        if bad:
            names = ", ".join(str(p.relative_to(root)) for p in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            logger.warning(
                "skipped %d unreadable image(s) under %s: %s%s", len(bad), root, names, more
            )
        if not readable:
            raise DataError(f"none of the {len(files)} image files under {root} could be read")
        self.skipped = len(bad)
        if holdout >= len(readable):
            raise DataError(f"{root}: no images left after holdout={holdout} of {len(readable)}")
        keep = heldout_indices(len(readable), holdout)[0] if holdout else range(len(readable))
        self.root = root
        self.files = [readable[i] for i in keep][: limit or None]
        self.labels, self.class_names = folder_labels(root, self.files)
        self.num_classes = len(self.class_names)
        self.captions = _read_captions(root, self.files)
        self.channels = 3
        self.decode_failures = 0

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """A short hash of the file list (relative paths, in order)."""
        return content_digest(*(p.relative_to(self.root).as_posix() for p in self.files))

    def __getitem__(self, i: int) -> Example:

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                pixels = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as err:
            # It passed verify() at scan time but fails to decode (e.g. truncated data):
            # substitute the next item so the step still has a full batch, and count it.
            self.decode_failures += 1
            logger.warning("cannot decode %s (%s); using the next image", path, err)
            if self.decode_failures > len(self):
                raise DataError(f"no image under {self.root} decodes") from None
            return self[(i + 1) % len(self)]
        return Example(pixels, self.labels[i], self.captions.get(path))


def image_files(root: Path) -> list[Path]:
    """Every image file under `root` (png, jpg, jpeg, webp; recursively), sorted.

    Raises:
        FileNotFoundError: `root` is not a folder.
        DataError: it holds no image file.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return files


def folder_labels(root: Path, files: Sequence[Path]) -> tuple[list[int], list[str]]:
    """Labels from first-level subfolder names (sorted, index = label) when every file lies in
    one, else all -1 and no class names.

    Args:
        root: the image folder.
        files: image files under it.
    Returns:
        (labels [len(files)], class names).
    """
    rel = [p.relative_to(root) for p in files]
    if not all(len(r.parts) > 1 for r in rel):
        return [-1] * len(rel), []
    names = sorted({r.parts[0] for r in rel})
    index = {name: i for i, name in enumerate(names)}
    return [index[r.parts[0]] for r in rel], names


def content_digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _image_ok(path: Path) -> bool:
    """True if PIL can identify and verify the file (cheap: no full decode)."""

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        return False


def _read_captions(root: Path, files: Sequence[Path]) -> dict[Path, str]:
    """Captions from metadata.jsonl files and sidecar .txt files (the sidecar wins)."""
    captions: dict[Path, str] = {}
    for meta in sorted(root.rglob("metadata.jsonl")):
        for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name = row["file_name"]
                text = row.get("text", row.get("caption"))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise DataError(
                    f"{meta}:{number}: expected a JSON object with file_name and text"
                ) from None
            if text is not None:
                captions[(meta.parent / name)] = str(text)
    for p in files:
        sidecar = p.with_suffix(".txt")
        if sidecar.is_file():
            captions[p] = sidecar.read_text(encoding="utf-8").strip()
    return captions


class ProceduralDataset:
    """Images drawn on the fly from the index: no files, any size, fully reproducible.

    Generators:
      - "shapes": one filled shape on a dark background; class k draws shape k mod 4
        (disc, square, triangle, ring) with a random position, size and colour.
      - "blobs": k + 1 soft Gaussian blobs for class k (count is the label).
    """

    def __init__(
        self,
        generator: str,
        size: int,
        resolution: int,
        num_classes: int,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        if generator not in ("shapes", "blobs"):
            raise DataError(f"unknown procedural generator {generator!r}; valid: shapes, blobs")
        self.generator = generator
        self.size = size
        self.resolution = resolution
        self.num_classes = num_classes
        self.class_names = [f"{generator}-{k}" for k in range(num_classes)]
        self.channels = channels
        self.seed = seed
        self.labels = np.arange(size, dtype=np.int64) % num_classes  # item i is class i mod k

    def __len__(self) -> int:
        return self.size

    def fingerprint(self) -> str:
        """A short hash of the generator's parameters."""
        return content_digest(
            self.generator, self.size, self.resolution, self.num_classes, self.channels, self.seed
        )

    def __getitem__(self, i: int) -> Example:
        rng = np.random.default_rng([self.seed, i, 0x5EED])
        label = int(self.labels[i])
        r = self.resolution
        yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) / r  # [r, r] each, in [0, 1)
        if self.generator == "shapes":
            cx, cy = rng.uniform(0.3, 0.7, size=2)
            rad = rng.uniform(0.15, 0.3)
            dx, dy = xx - cx, yy - cy
            kind = label % 4
            if kind == 0:
                mask = dx**2 + dy**2 < rad**2
            elif kind == 1:
                mask = (np.abs(dx) < rad) & (np.abs(dy) < rad)
            elif kind == 2:
                mask = (dy < rad) & (dy > -rad) & (np.abs(dx) < (dy + rad) / 2)
            else:
                d2 = dx**2 + dy**2
                mask = (d2 < rad**2) & (d2 > (0.55 * rad) ** 2)
            alpha = mask.astype(np.float32)
        else:
            alpha = np.zeros((r, r), np.float32)
            for _ in range(label + 1):
                cx, cy = rng.uniform(0.15, 0.85, size=2)
                width = rng.uniform(0.05, 0.12)
                alpha += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
            alpha = np.clip(alpha, 0, 1)
        colour = rng.uniform(0.4, 1.0, size=self.channels).astype(np.float32)  # [C]
        pixels = alpha[..., None] * colour * 255.0  # [r, r, C]
        return Example(pixels.round().astype(np.uint8), label)


class ScenesDataset:
    """Captioned Shapes scenes (`diffuse.shapes`), training split, rendered by index.

    Unlabelled; every item has a caption naming the colour and shape of each object. The
    training split never holds a held-out object pair or held-out single object, so prompts
    of the held-out split stay unseen.
    """

    PARALLEL_FROM = 20_000  # render in worker processes from this many scenes on

    def __init__(
        self, size: int, resolution: int, seed: int = 0, captions: str = "templates"
    ) -> None:

        self.captions_kind = captions  # "templates" or "grammar" (DataConfig.captions)
        self.scenes = ShapesDataset(
            resolution, split="train", length=size, seed=seed, captions=_CAPTIONS[captions]
        )
        self.num_classes, self.class_names, self.channels = 0, [], 3
        self.size, self.resolution, self.seed = size, resolution, seed
        self.labels = np.full(size, -1, dtype=np.int64)
        self._captions: list[str] | None = None

    def render_all(self, workers: int | None = None) -> np.ndarray:
        """Every image, uint8 [N, H, W, 3] (about 0.5 ms each at 32 px); many scenes are
        rendered in `workers` processes (default: one per CPU), captions alongside."""
        workers = workers or os.cpu_count() or 1
        if workers == 1 or self.size < self.PARALLEL_FROM:
            return np.stack([self.scenes.image_uint8(i) for i in range(self.size)])

        bounds = np.linspace(0, self.size, 4 * workers + 1).astype(int).tolist()
        ranges = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        # fork: the workers run numpy and Python only, and spawn cannot re-import a __main__
        # read from stdin or a notebook
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(
                pool.map(
                    _render_scenes,
                    *zip(
                        *[
                            (self.size, self.resolution, self.seed, a, b, self.captions_kind)
                            for a, b in ranges
                        ]
                    ),
                )
            )
        self._captions = [text for _, texts in parts for text in texts]
        return np.concatenate([images for images, _ in parts])

    def captions(self) -> list[str]:
        """Every item's caption (kept from `render_all` when it ran in workers)."""
        if self._captions is None:
            self._captions = [self.scenes.caption(i) for i in range(self.size)]
        return self._captions

    def __len__(self) -> int:
        return self.size

    def fingerprint(self) -> str:
        """A short hash of the scene stream's parameters."""
        if self.captions_kind == "templates":  # the fingerprint runs before captions had
            return content_digest("scenes", self.size, self.resolution, self.seed)
        return content_digest("scenes", self.size, self.resolution, self.seed, self.captions_kind)

    def __getitem__(self, i: int) -> Example:
        return Example(self.scenes.image_uint8(i), -1, self.scenes.caption(i))


# DataConfig.captions -> the ShapesDataset caption kind.
_CAPTIONS = {"templates": "train", "grammar": "grammar"}


def _render_scenes(
    size: int, resolution: int, seed: int, start: int, stop: int, captions: str = "templates"
) -> tuple[np.ndarray, list[str]]:
    """Images and captions of scenes [start, stop) (a worker process's share)."""

    scenes = ShapesDataset(
        resolution, split="train", length=size, seed=seed, captions=_CAPTIONS[captions]
    )
    images = np.stack([scenes.image_uint8(i) for i in range(start, stop)])
    return images, [scenes.caption(i) for i in range(start, stop)]


class ClipsDataset:
    """Captioned Moving Shapes clips (`diffuse.shapes.clip_dataset`), training split.

    An item's `image` is the whole clip, uint8 [T, H, W, 3]; the caption names each object's
    colour, shape and motion. Unlabelled.
    """

    def __init__(self, size: int, frames: int, resolution: int, seed: int = 0) -> None:
        self.clips = MovingShapesDataset(size, frames, resolution, split="train", seed=seed)
        self.num_classes, self.class_names, self.channels = 0, [], 3
        self.size, self.frames, self.resolution, self.seed = size, frames, resolution, seed
        self.labels = np.full(size, -1, dtype=np.int64)
        self._captions: list[str] | None = None

    def render_all(self) -> np.ndarray:
        """Every clip, uint8 [N, T, H, W, 3]."""
        return np.stack([self.clips.frames_uint8(i) for i in range(self.size)])

    def captions(self) -> list[str]:
        """Every clip's caption."""
        if self._captions is None:
            self._captions = [self.clips.caption(i) for i in range(self.size)]
        return self._captions

    def __len__(self) -> int:
        return self.size

    def fingerprint(self) -> str:
        """A short hash of the clip stream's parameters."""
        return content_digest("moving-shapes", self.size, self.frames, self.resolution, self.seed)

    def __getitem__(self, i: int) -> Example:
        return Example(self.clips.frames_uint8(i), -1, self.clips.caption(i))


AnyDataset = NpzDataset | FolderDataset | ProceduralDataset | ScenesDataset | ClipsDataset


def build_dataset(cfg: DataConfig, seed: int = 0) -> AnyDataset:
    """The dataset a recipe's [data] section names (before resizing and flips)."""
    if cfg.source == "scenes":
        return ScenesDataset(cfg.size, cfg.resolution, seed=seed, captions=cfg.captions)
    if cfg.source == "moving-shapes":
        return ClipsDataset(cfg.size, cfg.frames, cfg.resolution, seed=seed)
    if cfg.source == "npz":
        return NpzDataset(resolve_data_path(cfg.path), holdout=cfg.holdout, limit=cfg.limit)
    if cfg.source == "folder":
        return FolderDataset(resolve_data_path(cfg.path), holdout=cfg.holdout, limit=cfg.limit)
    size = cfg.size - cfg.holdout
    if cfg.limit:
        size = min(size, cfg.limit)
    if size <= 0:
        raise DataError(f"procedural data: size {cfg.size} - holdout {cfg.holdout} leaves none")
    return ProceduralDataset(
        cfg.generator, size, cfg.resolution, cfg.num_classes, cfg.channels or 3, seed=seed
    )
