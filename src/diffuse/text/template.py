"""The mask syntax of infilling templates: where the model fills in characters.

    ROMEO: [____] my lord       four characters to fill (one per underscore)
    ROMEO: [12] my lord         twelve characters to fill
    a [[literal]] bracket       `[[` and `]]` stand for the characters `[` and `]`

Everything outside brackets is given text and is kept. A bracket holds either underscores
only (one character each) or a positive whole number; anything else, an empty `[]`, an
unclosed `[` or a lone `]` is an error naming its position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffuse.text.vocab import CharVocab

__all__ = ["MASK_SYNTAX", "Template", "TemplateError", "parse_template"]

MASK_SYNTAX = (
    "[___] marks one character to fill per underscore, [N] marks N characters; "
    "[[ and ]] are literal brackets; all other text is kept"
)


class TemplateError(ValueError):
    """A template that breaks the mask syntax."""


@dataclass(frozen=True)
class Template:
    """A parsed template: pieces of given text and gaps, in order.

    Attributes:
        pieces: each a str (given text) or an int (a gap of that many characters).
    """

    pieces: tuple[str | int, ...]

    @property
    def length(self) -> int:
        """Characters of the filled sequence."""
        return sum(p if isinstance(p, int) else len(p) for p in self.pieces)

    @property
    def masked(self) -> int:
        """Characters to fill."""
        return sum(p for p in self.pieces if isinstance(p, int))

    def tokens(self, vocab: CharVocab) -> Tensor:
        """Ids [length] with the mask id in every gap (UnknownCharactersError if the given
        text holds characters outside the vocabulary)."""
        given = "".join(p for p in self.pieces if isinstance(p, str))
        vocab.encode(given)  # one error listing every unknown character
        parts = [
            torch.full((p,), vocab.mask_id, dtype=torch.long)
            if isinstance(p, int)
            else vocab.encode(p)
            for p in self.pieces
        ]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def fill(self, tokens: Tensor, vocab: CharVocab) -> tuple[str, list[str]]:
        """(the whole text, the text of each gap) of a filled sequence [length]."""
        text = vocab.decode(tokens)
        gaps, at = [], 0
        for p in self.pieces:
            n = p if isinstance(p, int) else len(p)
            if isinstance(p, int):
                gaps.append(text[at : at + n])
            at += n
        return text, gaps


def parse_template(template: str) -> Template:
    """Parse the mask syntax (see the module docstring).

    Raises:
        TemplateError: the fault and its 0-based character position.
    """
    pieces: list[str | int] = []
    text: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if template.startswith("[[", i) or template.startswith("]]", i):
            text.append(c)
            i += 2
            continue
        if c == "]":
            raise TemplateError(
                f"unmatched ']' at position {i} of the template (write ']]' for a literal ']')"
            )
        if c != "[":
            text.append(c)
            i += 1
            continue
        close = template.find("]", i + 1)
        if close < 0:
            raise TemplateError(
                f"unclosed '[' at position {i} of the template (write '[[' for a literal '[')"
            )
        body = template[i + 1 : close]
        if body and set(body) == {"_"}:
            gap = len(body)
        elif body.isdigit() and body.isascii():
            gap = int(body)
            if gap == 0:
                raise TemplateError(f"[{body}] at position {i} asks for 0 characters; use N >= 1")
        else:
            raise TemplateError(
                f"[{body}] at position {i} is not a gap: write underscores ([____]) or a "
                "number of characters ([12])"
            )
        if text:
            pieces.append("".join(text))
            text = []
        pieces.append(gap)
        i = close + 1
    if text:
        pieces.append("".join(text))
    if not any(isinstance(p, int) for p in pieces):
        raise TemplateError(f"the template has no gap to fill; {MASK_SYNTAX}")
    return Template(tuple(pieces))
