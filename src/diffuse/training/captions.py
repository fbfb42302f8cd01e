"""Text conditioning for training: every caption encoded once, batches built by index.

A frozen text encoder costs as much per caption as a small denoiser's training step, so the
captions of the whole dataset are encoded once before training (shortest first, in batches,
which wastes little on padding) and kept as float16 token embeddings. The bank is saved next to
the run (`text-cache.safetensors`, keyed by a hash of the encoder and the captions) so a resumed
run skips the work. Items without a caption, and captions dropped for classifier-free guidance,
use the empty prompt: the unconditional input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from diffuse.codecs.text_encoder import UNCONDITIONAL_PROMPT, TextEncoder
from diffuse.training.tensor_cache import load_cached, save_cached

__all__ = ["CaptionBank"]

logger = logging.getLogger(__name__)


class CaptionBank:
    """Encoded captions of a dataset, looked up by item index.

    Args:
        encoder: the frozen text encoder.
        captions: one caption per item (None or "" for none).
        cache_dir: folder for `text-cache.safetensors` (None: no file).
        batch_size: captions per encoder call while building.
    """

    CACHE_FILE = "text-cache.safetensors"

    def __init__(
        self,
        encoder: TextEncoder,
        captions: Sequence[str | None],
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 256,
    ) -> None:
        texts = [c or UNCONDITIONAL_PROMPT for c in captions]
        distinct = sorted(set(texts) | {UNCONDITIONAL_PROMPT})
        self.dim, self.pooled_dim = encoder.dim, encoder.pooled_dim
        key = hashlib.sha256(
            json.dumps([str(encoder.path), encoder.max_length, distinct]).encode()
        ).hexdigest()[:16]
        path = Path(cache_dir) / self.CACHE_FILE if cache_dir is not None else None
        names = ("tokens", "offsets", "pooled")
        loaded = load_cached(path, key, names, "text cache") if path is not None else None
        if loaded is None:
            tokens, offsets, pooled = _encode_all(encoder, distinct, batch_size)
            if path is not None:
                save_cached(path, key, dict(zip(names, (tokens, offsets, pooled))))
        else:
            tokens, offsets, pooled = (loaded[name] for name in names)
            logger.info("text encodings of %d captions read from %s", len(distinct), path)
        self._tokens, self._offsets, self._pooled = tokens, offsets, pooled
        row = {text: i for i, text in enumerate(distinct)}
        self._item_rows = torch.tensor([row[t] for t in texts], dtype=torch.long)
        self._empty_row = row[UNCONDITIONAL_PROMPT]

    def __len__(self) -> int:
        return len(self._item_rows)

    def batch(self, indices: Sequence[int], drop: Tensor | None = None) -> dict[str, Tensor]:
        """The network's text conditioning for items `indices`.

        Args:
            indices: dataset item indices.
            drop: [B] bool; True replaces the caption by the empty prompt.
        Returns:
            {"context": [B, L, D] float32, "context_mask": [B, L] bool, "pooled": [B, P]}.
        """
        rows = self._item_rows[torch.as_tensor(list(indices), dtype=torch.long)]
        if drop is not None:
            rows = torch.where(drop.bool(), self._empty_row, rows)
        starts, ends = self._offsets[rows], self._offsets[rows + 1]
        lengths = ends - starts
        length = int(lengths.max())
        context = torch.zeros(len(rows), length, self.dim)
        mask = torch.arange(length)[None, :] < lengths[:, None]
        for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            context[i, : b - a] = self._tokens[a:b].float()
        return {"context": context, "context_mask": mask, "pooled": self._pooled[rows].float()}


def _encode_all(
    encoder: TextEncoder, texts: list[str], batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Encode distinct texts shortest first: (tokens [T, D] f16, offsets [N+1], pooled [N, P])."""
    lengths = [len(ids) for ids in encoder.tokenizer(texts, verbose=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    per_text: list[Tensor | None] = [None] * len(texts)
    pooled = torch.zeros(len(texts), encoder.pooled_dim, dtype=torch.float16)
    logger.info("encoding %d distinct captions with %s", len(texts), encoder.path.name)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = encoder.encode([texts[i] for i in chunk])
        counts = enc.context_mask.sum(1).tolist()  # real tokens come first
        for row, (i, n) in enumerate(zip(chunk, counts)):
            per_text[i] = enc.context[row, :n].to(torch.float16).cpu()
            pooled[i] = enc.pooled[row].to(torch.float16).cpu()
    encoder.clear_cache()
    counts = torch.tensor([0] + [t.shape[0] for t in per_text])
    return torch.cat(per_text), torch.cumsum(counts, 0), pooled
