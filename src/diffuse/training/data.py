"""Training data: npz archives, image folders and procedural datasets, in a resumable order.

Every dataset maps an index to an `Example` (uint8 HWC pixels, a label, an optional caption).
`TrainData` prepares examples once per index (resize shorter side, centre-crop, pad, channel
conversion) and assembles float batches in [-1, 1], NCHW, with per-sample horizontal flips.

The order is a pure function of (seed, step): epoch e uses the permutation drawn from
(seed, e), and global batch k takes positions [k B, (k + 1) B) of its epoch (the remainder of
an epoch is dropped). Rank r of W takes the r-th contiguous slice of that global batch, so the
union of the ranks' batches is the one-process batch, and resuming needs only the step number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from diffuse.config import DataConfig
from diffuse.data_files import (
    heldout_indices,
    missing_data_message,
    resolve_data_path,
    shared_data_dir,
    shared_data_file,
)
from diffuse.io import file_sha256
from diffuse.shapes.dataset import ShapesDataset
from diffuse.training.counter_rng import mix_seeds
from diffuse.training.tensor_cache import load_cached, save_cached

logger = logging.getLogger(__name__)

__all__ = [
    "BatchOrder",
    "DataError",
    "Example",
    "FolderDataset",
    "NpzDataset",
    "ProceduralDataset",
    "ScenesDataset",
    "TrainData",
    "build_dataset",
    "folder_labels",
    "image_files",
    "missing_data_message",
    "resolve_data_path",
    "shared_data_dir",
    "shared_data_file",
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
        return _digest(str(self.images.shape), self.labels.tobytes())

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
        return _digest(*(p.relative_to(self.root).as_posix() for p in self.files))

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


def _digest(*parts: object) -> str:
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
        return _digest(
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
            return _digest("scenes", self.size, self.resolution, self.seed)
        return _digest("scenes", self.size, self.resolution, self.seed, self.captions_kind)

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


AnyDataset = NpzDataset | FolderDataset | ProceduralDataset | ScenesDataset


def build_dataset(cfg: DataConfig, seed: int = 0) -> AnyDataset:
    """The dataset a recipe's [data] section names (before resizing and flips)."""
    if cfg.source == "scenes":
        return ScenesDataset(cfg.size, cfg.resolution, seed=seed, captions=cfg.captions)
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


# --------------------------------------------------------------------------------------------
# Preparation and batches
# --------------------------------------------------------------------------------------------


def prepare_image(image: np.ndarray, resolution: int, channels: int, pad: int) -> np.ndarray:
    """Resize the shorter side to `resolution`, centre-crop a square, convert channels, pad.

    Args:
        image: uint8 [H, W, C] with C 1 or 3.
        resolution: side of the square crop.
        channels: 1 or 3 (converted with PIL's luminance / replication), or 0 to keep.
        pad: black border added on every side.
    Returns:
        uint8 [resolution + 2 pad, resolution + 2 pad, C'].
    """
    from PIL import Image

    h, w, c = image.shape
    if (h, w) != (resolution, resolution):
        im = Image.fromarray(image[..., 0] if c == 1 else image)
        scale = resolution / min(h, w)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        im = im.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        image = np.asarray(im)
        if image.ndim == 2:
            image = image[..., None]
        c = image.shape[-1]
    if channels and channels != c:
        if channels == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
            luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            image = np.clip(luma.round(), 0, 255).astype(np.uint8)[..., None]
        else:
            image = np.repeat(image, 3, axis=-1)
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return np.ascontiguousarray(image)


class TrainData:
    """A dataset with its preparation, giving float batches for lists of indices.

    Array-backed datasets (npz) are prepared once up front, so a batch is one fancy index;
    others are prepared per item, with the next batch decoded in a background thread.
    """

    def __init__(self, dataset: AnyDataset, cfg: DataConfig) -> None:
        self.dataset = dataset
        self.cfg = cfg
        self.channels = cfg.channels or dataset.channels
        self.image_size = cfg.image_size
        self.num_classes = dataset.num_classes
        self.class_names = list(dataset.class_names)
        self.array: np.ndarray | None = None
        if isinstance(dataset, NpzDataset):
            images = dataset.images
            same = images.shape[1:3] == (cfg.resolution, cfg.resolution)
            if same and self.channels == images.shape[-1] and not cfg.pad:
                self.array = images
            else:
                self.array = np.stack([self._prepare(im) for im in images])
        elif isinstance(dataset, ScenesDataset) and not cfg.pad:
            self.array = dataset.render_all()  # cheap and small: no decoding thread needed
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[tuple[int, ...], Future] = {}
        self.latents: Tensor | None = None  # set by `encode_latents` (latent diffusion)
        self.latents_flipped: Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    LATENT_CACHE = "latent-cache.safetensors"

    def encode_latents(
        self, codec: Any, cache_dir: str | os.PathLike | None, batch_size: int = 64
    ) -> TrainData:
        """Encode every image once with `codec`, on the codec's device (posterior means;
        mirrored copies too when the recipe flips), so batches are latents from then on. The
        latents are kept in `cache_dir`/latent-cache.safetensors (None: no file), keyed by the
        codec's weights and the data, and read back on resume. Returns self."""
        weights = Path(codec.source) / "vae.safetensors"
        key = _digest(self.dataset.fingerprint(), self.cfg.flip, file_sha256(weights)[:16])
        path = Path(cache_dir) / self.LATENT_CACHE if cache_dir is not None else None
        cached = load_cached(path, key, ("latents",), "latent cache") if path else None
        if cached is not None:
            self._set_latents(cached["latents"], cached.get("flipped"))
            logger.info("latents of %d images read from %s", len(self), path)
            return self
        logger.info("encoding %d images with the codec %s", len(self), codec.source)
        device = next(codec.parameters()).device
        parts, flipped = [], []
        with torch.no_grad():
            for start in range(0, len(self), batch_size):
                x, _, _ = self.batch(range(start, min(len(self), start + batch_size)))
                x = x.to(device)
                parts.append(codec.encode(x).half().cpu().contiguous())
                if self.cfg.flip:
                    flipped.append(codec.encode(x.flip(-1)).half().cpu().contiguous())
        tensors = {"latents": torch.cat(parts)}
        if flipped:
            tensors["flipped"] = torch.cat(flipped)
        if path is not None:
            save_cached(path, key, tensors)
        self._set_latents(tensors["latents"], tensors.get("flipped"))
        return self

    def _set_latents(self, latents: Tensor, flipped: Tensor | None) -> None:
        self.latents, self.latents_flipped = latents, flipped
        self.channels, self.image_size = int(latents.shape[1]), int(latents.shape[-1])

    def captions(self) -> list[str | None]:
        """The caption of every item (None where an item has none)."""
        ds = self.dataset
        if isinstance(ds, ScenesDataset):
            return list(ds.captions())
        if isinstance(ds, FolderDataset):
            return [ds.captions.get(path) for path in ds.files]
        return [None] * len(ds)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        return prepare_image(image, self.cfg.resolution, self.channels, self.cfg.pad)

    def _load(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        if self.array is not None:
            idx = np.asarray(indices, dtype=np.int64)
            return self.array[idx], self.dataset.labels[idx], [None] * len(idx)
        items = [self.dataset[int(i)] for i in indices]
        images = np.stack([self._prepare(e.image) for e in items])
        labels = np.array([e.label for e in items], dtype=np.int64)
        return images, labels, [e.caption for e in items]

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start decoding `indices` in a background thread (no-op for array data)."""
        if self.array is not None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="diffuse-data")
        key = tuple(int(i) for i in indices)
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self._load, key)

    def batch(
        self, indices: Sequence[int], flips: Tensor | None = None
    ) -> tuple[Tensor, Tensor, list[str | None]]:
        """Images, labels and captions of `indices`.

        Args:
            indices: dataset indices [B].
            flips: bool [B]; True mirrors that image horizontally.
        Returns:
            x float32 [B, C, H, W] in [-1, 1], labels int64 [B] (-1: none), captions.
        """
        if self.latents is not None:  # latent space: encoded once
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            z = self.latents[idx]
            if flips is not None and self.latents_flipped is not None:
                z = torch.where(flips.reshape(-1, 1, 1, 1), self.latents_flipped[idx], z)
            labels = np.asarray(self.dataset.labels, dtype=np.int64)[idx.numpy()]
            return z.float(), torch.from_numpy(labels), [None] * len(idx)
        key = tuple(int(i) for i in indices)
        future = self._pending.pop(key, None)
        images, labels, captions = future.result() if future else self._load(key)
        self._pending.clear()  # a stale prefetch (after a resume) is simply dropped
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # [B, C, H, W]
        x = x.float() / 127.5 - 1.0
        if flips is not None and bool(flips.any()):
            x = torch.where(flips.reshape(-1, 1, 1, 1), x.flip(-1), x)
        return x, torch.from_numpy(np.asarray(labels)), captions

    def close(self) -> None:
        """Stop the background thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# --------------------------------------------------------------------------------------------
# Order
# --------------------------------------------------------------------------------------------


class BatchOrder:
    """Deterministic, shardable, resumable order of global batches.

    Args:
        num_items: dataset length.
        batch_size: global batch (all ranks).
        seed: the run's seed.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, fingerprint: str = "") -> None:
        if num_items < batch_size:
            raise DataError(
                f"the dataset has {num_items} items, fewer than one batch of "
                f"{batch_size}; lower optim.batch_size"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.fingerprint = fingerprint  # of the dataset's contents; checked on resume
        self._epoch: tuple[int, np.ndarray] | None = None  # the current epoch's permutation

    @property
    def batches_per_epoch(self) -> int:
        """Full global batches per pass over the data."""
        return self.num_items // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The index permutation of `epoch`."""
        rng = np.random.Generator(np.random.PCG64(mix_seeds(self.seed, epoch, 0xDA7A)))
        return rng.permutation(self.num_items)

    def global_batch(self, step: int) -> np.ndarray:
        """Dataset indices of global batch `step` (0-based), [batch_size]."""
        epoch, j = divmod(step, self.batches_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self.permutation(epoch))
        return self._epoch[1][j * self.batch_size : (j + 1) * self.batch_size]

    def shard(self, step: int, rank: int, world_size: int) -> tuple[np.ndarray, int]:
        """Rank `rank`'s slice of global batch `step` and the slice's first global position."""
        per_rank = self.batch_size // world_size
        start = rank * per_rank
        return self.global_batch(step)[start : start + per_rank], start

    def state_dict(self, step: int) -> dict[str, Any]:
        """What a checkpoint records about the order (the step is the whole position)."""
        epoch, j = divmod(step, self.batches_per_epoch)
        return {
            "num_items": self.num_items,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": j,
            "fingerprint": self.fingerprint,
        }

    def check_resumable(self, state: dict[str, Any]) -> None:
        """Raise DataError if a checkpoint's order state does not describe this order."""
        for key in ("num_items", "batch_size", "seed", "fingerprint"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(
                    f"cannot resume: the checkpoint's data order has {key}={state[key]}, this "
                    f"run has {getattr(self, key)} (the dataset or recipe changed)"
                )
