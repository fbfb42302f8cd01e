"""The words a text model trained on Shapes captions has seen, and the prompt words it has not.

Everything here is read from the code that writes the training captions
(`diffuse.shapes.scenes`: `TRAIN_VOCABULARY`, its templates, `TRAIN_WORDS`), so the lists can
never drift from what a model was trained on. A recipe trains on these captions when its data
source is the captioned Shapes scenes (`data.source = "scenes"`, see `diffuse.config`).

    unknown_words("a dragon flying above a red circle")   # ['dragon', 'flying']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from diffuse.shapes.scenes import CELL_NAMES, TRAIN_VOCABULARY, TRAIN_WORDS, caption, sample_scene

__all__ = [
    "CAPTION_SOURCE",
    "WORDS",
    "describe",
    "summary",
    "trained_on_shapes_captions",
    "unknown_words",
]

# The recipe's data.source whose items carry Shapes captions (training/data.py builds them).
CAPTION_SOURCE = "scenes"
# Every word that can occur in a training caption (lower case).
WORDS: frozenset[str] = TRAIN_WORDS

# A word of a prompt: letters, with an inner apostrophe ("dragon's" is one word).
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def unknown_words(prompt: str) -> list[str]:
    """The words of `prompt` that no training caption contains, each once, in prompt order.

    Args:
        prompt: the text given to the model (case and punctuation do not matter; digits are
            not words).
    Returns:
        the unknown words, lower case; [] when the model saw every word.
    """
    seen: dict[str, None] = {}
    for word in _WORD.findall(prompt.lower()):
        if word not in WORDS:
            seen.setdefault(word, None)
    return list(seen)


def trained_on_shapes_captions(recipe: Mapping[str, Any] | None) -> bool:
    """Whether a model's training recipe (as a model folder records it) used Shapes captions.

    Args:
        recipe: the recipe as JSON (`ModelInfo.recipe`; None when unknown).
    Returns:
        True when the recipe's data source is the captioned Shapes scenes.
    """
    data = recipe.get("data") if isinstance(recipe, Mapping) else None
    return isinstance(data, Mapping) and data.get("source") == CAPTION_SOURCE


def _groups() -> dict[str, list[str]]:
    """Name -> the words or phrases of that kind in training captions, in the code's order."""
    relations = [p for phrases in TRAIN_VOCABULARY.relations.values() for p in phrases]
    vertical, horizontal = TRAIN_VOCABULARY.relations["above"], TRAIN_VOCABULARY.relations["left"]
    if TRAIN_VOCABULARY.combined:
        relations.append(TRAIN_VOCABULARY.combined.format(v=vertical[0], h=horizontal[0]))
    counts = sorted(TRAIN_VOCABULARY.templates)
    return {
        "objects": [f"{counts[0]} to {counts[-1]} per image"],
        "shapes": [w for words in TRAIN_VOCABULARY.shapes.values() for w in words],
        "colours": [w for words in TRAIN_VOCABULARY.colours.values() for w in words],
        "sizes": [w for words in TRAIN_VOCABULARY.sizes.values() for w in words],
        "positions": list(CELL_NAMES.values()),
        "relations": relations,
    }


def _examples(count: int) -> list[str]:
    """`count` short training captions (deterministic), as examples of prompts that work."""
    captions = [caption(sample_scene(0, i), 0, i) for i in range(4 * count)]
    return sorted(captions, key=len)[:count]


def describe(width: int = 78) -> str:
    """A multi-line listing of the vocabulary, with example prompts (for `--help`).

    Args:
        width: wrap lines to this many characters.
    Returns:
        the text, lines separated by newlines.
    """
    lines = ["The bundled Shapes models know only the words of their training captions:"]
    for name, words in _groups().items():
        line = f"  {name + ':':<11} "
        for i, word in enumerate(words):
            piece = word + ("," if i < len(words) - 1 else "")
            if len(line) + len(piece) + 1 > width and not line.endswith(" " * 13):
                lines.append(line.rstrip())
                line = " " * 14
            line += piece + " "
        lines.append(line.rstrip())
    lines.append("  examples:")
    lines.extend(f'    "{text}"' for text in _examples(2))
    return "\n".join(lines)


def summary() -> str:
    """One line: what a Shapes model draws, e.g. '1 to 3 shapes (circle, square, ...) ...'."""
    groups = _groups()
    counts = sorted(TRAIN_VOCABULARY.templates)
    return (
        f"it draws {counts[0]} to {counts[-1]} shapes ({', '.join(groups['shapes'])}), "
        f"coloured {', '.join(groups['colours'])}, {' or '.join(groups['sizes'])}, placed by "
        "position or relation (see diffuse generate --help)"
    )
