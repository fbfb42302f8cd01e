"""The character vocabulary of a text model: characters <-> token ids, plus the mask token.

Ids 0..V-1 are the characters (sorted, so a vocabulary is a pure function of the text it was
built from); id V is the mask token of masked diffusion, which the autoregressive model of the
same network reads as its begin-of-sequence input. The network never predicts it.

Unknown-character policy: encoding text with a character outside the vocabulary is an error
that lists every such character (no silent replacement), because a model cannot score or
condition on a character it never saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CharVocab", "UnknownCharactersError"]


class UnknownCharactersError(ValueError):
    """Text holds characters the vocabulary does not know."""


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary.

    Args:
        chars: the characters, in id order (unique, one character each).
    """

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "chars", tuple(self.chars))
        bad = [c for c in self.chars if len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single characters, got {bad[:5]}")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("vocabulary characters must be unique")
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The sorted set of characters of `text`."""
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        """Number of characters V (the network's output width)."""
        return len(self.chars)

    @property
    def mask_id(self) -> int:
        """The mask token's id (V); the input width of the network is V + 1."""
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary, in order of appearance."""
        index = self._index  # type: ignore[attr-defined]
        return list(dict.fromkeys(c for c in text if c not in index))

    def encode(self, text: str) -> Tensor:
        """Token ids [len(text)] (int64) of `text`.

        Raises:
            UnknownCharactersError: listing every character not in the vocabulary.
        """
        bad = self.unknown(text)
        if bad:
            shown = ", ".join(repr(c) for c in bad[:20])
            raise UnknownCharactersError(
                f"{len(bad)} character(s) not in the model's vocabulary of {self.size}: {shown}"
            )
        index = self._index  # type: ignore[attr-defined]
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Sequence[int] | Tensor | Iterable[int], mask: str = "_") -> str:
        """Text of token ids; the mask token (if any is left) is shown as `mask`."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        out = []
        for i in values:
            if i == self.mask_id:
                out.append(mask)
            elif 0 <= i < self.size:
                out.append(self.chars[i])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{self.mask_id})")
        return "".join(out)
