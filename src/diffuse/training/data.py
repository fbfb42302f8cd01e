"""Training batches: examples prepared once per index and assembled into float batches, in a
resumable order.

`TrainData` prepares examples (`diffuse.training.datasets`) once per index (resize shorter side,
centre-crop, pad, channel conversion) and assembles float batches in [-1, 1], NCHW, with
per-sample horizontal flips.

The order is a pure function of (seed, step): epoch e uses the permutation drawn from
(seed, e), and global batch k takes positions [k B, (k + 1) B) of its epoch (the remainder of
an epoch is dropped). Rank r of W takes the r-th contiguous slice of that global batch, so the
union of the ranks' batches is the one-process batch, and resuming needs only the step number.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffuse.config import DataConfig
from diffuse.io import file_sha256
from diffuse.nets.temporal import fold_frames, unfold_frames
from diffuse.training.counter_rng import mix_seeds
from diffuse.training.datasets import (
    AnyDataset,
    ClipsDataset,
    DataError,
    FolderDataset,
    NpzDataset,
    ScenesDataset,
    content_digest,
)
from diffuse.training.tensor_cache import load_cached, save_cached

logger = logging.getLogger(__name__)

__all__ = ["BatchOrder", "TrainData", "prepare_image"]


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
        elif isinstance(dataset, ClipsDataset):
            self.array = dataset.render_all()  # uint8 [N, T, H, W, 3]
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[tuple[int, ...], Future] = {}
        self.latents: Tensor | None = None  # set by `encode_latents` (latent diffusion)
        self.latents_flipped: Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def frames(self) -> int:
        """Frames per clip (0: images)."""
        return self.cfg.frames

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one training item: (C, H, W), or (C, T, H, W) for clips (latents once
        encoded)."""
        clip = (self.frames,) if self.frames else ()
        return (self.channels, *clip, self.image_size, self.image_size)

    LATENT_CACHE = "latent-cache.safetensors"

    def encode_latents(
        self, codec: Any, cache_dir: str | os.PathLike | None, batch_size: int = 64
    ) -> TrainData:
        """Encode every image once with `codec`, on the codec's device (posterior means;
        mirrored copies too when the recipe flips), so batches are latents from then on. The
        latents are kept in `cache_dir`/latent-cache.safetensors (None: no file), keyed by the
        codec's weights and the data, and read back on resume. Returns self."""
        weights = Path(codec.source) / "vae.safetensors"
        key = content_digest(self.dataset.fingerprint(), self.cfg.flip, file_sha256(weights)[:16])
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
                if self.frames:  # clips: every frame encoded on its own
                    z = unfold_frames(codec.encode(fold_frames(x)), self.frames)
                    parts.append(z.half().cpu().contiguous())
                    continue
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
        if isinstance(ds, ScenesDataset | ClipsDataset):
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

    def pixels(self, indices: Sequence[int]) -> np.ndarray:
        """The prepared uint8 images [B, H, W, C] of `indices` (pixels, also for latent runs)."""
        return self._load(indices)[0]

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
            x float32 [B, C, H, W] (clips: [B, C, T, H, W]) in [-1, 1], labels int64 [B]
            (-1: none), captions.
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
        x = torch.from_numpy(np.ascontiguousarray(images))
        # [B, H, W, C] -> [B, C, H, W]; clips [B, T, H, W, C] -> [B, C, T, H, W]
        x = x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x.permute(0, 3, 1, 2)
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
