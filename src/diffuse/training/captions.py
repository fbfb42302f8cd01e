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
        starts = self._offsets[rows]
        lengths = self._offsets[rows + 1] - starts
        positions = torch.arange(int(lengths.max()))[None, :]
        mask = positions < lengths[:, None]
        rows_tokens = self._tokens[torch.where(mask, starts[:, None] + positions, 0)]
        context = rows_tokens.float().masked_fill_(~mask[..., None], 0.0)
        return {"context": context, "context_mask": mask, "pooled": self._pooled[rows].float()}


def _encode_all(
    encoder: TextEncoder, texts: list[str], batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Encode distinct texts shortest first: (tokens [T, D] f16, offsets [N+1], pooled [N, P]),
    the tokens of text i at tokens[offsets[i]:offsets[i + 1]]. Each batch is moved off the
    encoder's device once and packed by its mask, with no per-caption work."""
    lengths = [len(ids) for ids in encoder.tokenizer(texts, verbose=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    parts, counts, pooled_parts = [], [], []
    logger.info("encoding %d distinct captions with %s", len(texts), encoder.path.name)
    for start in range(0, len(order), batch_size):
        enc = encoder.encode_uncached([texts[i] for i in order[start : start + batch_size]])
        mask = enc.context_mask.cpu()
        parts.append(enc.context.to(torch.float16).cpu()[mask])  # real tokens, row by row
        counts.append(mask.sum(1))
        pooled_parts.append(enc.pooled.to(torch.float16).cpu())
    # Storage in encoding order -> storage in the order of `texts`, by one gather.
    rank = torch.empty(len(texts), dtype=torch.long)
    rank[torch.tensor(order, dtype=torch.long)] = torch.arange(len(texts))
    sorted_counts = torch.cat(counts)
    sorted_starts = torch.cumsum(sorted_counts, 0) - sorted_counts
    lengths_t = sorted_counts[rank]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths_t, 0)])
    within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], lengths_t)
    gather = torch.repeat_interleave(sorted_starts[rank], lengths_t) + within
    return torch.cat(parts)[gather], offsets, torch.cat(pooled_parts)[rank]
