"""The words a text model trained on Shapes captions has seen, and the prompt words it has not.

Everything here is read from the code that writes the training captions, so the lists can never
drift from what a model was trained on. A recipe trains on Shapes captions when its data source
is the captioned Shapes scenes (`data.source = "scenes"`, see `diffuse.config`); its
`data.captions` says which: "templates" (`diffuse.shapes.scenes`: `TRAIN_VOCABULARY`, its
templates, `TRAIN_WORDS`) or "grammar" (those templates and the training side of the caption
grammar, `diffuse.shapes.grammar`: `TRAIN_GRAMMAR`, `GRAMMAR_TRAIN_WORDS`).

    unknown_words("a dragon flying above a red circle")   # ['dragon', 'flying']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from diffuse.shapes.grammar import GRAMMAR_TRAIN_WORDS, TRAIN_GRAMMAR, training_caption
from diffuse.shapes.scenes import CELL_NAMES, TRAIN_VOCABULARY, TRAIN_WORDS, caption, sample_scene

__all__ = [
    "CAPTION_SOURCE",
    "CAPTION_WORDS",
    "WORDS",
    "caption_kind",
    "describe",
    "summary",
    "trained_on_shapes_captions",
    "unknown_words",
]

# The recipe's data.source whose items carry Shapes captions (training/datasets.py builds them).
CAPTION_SOURCE = "scenes"
# data.captions -> every word that can occur in a training caption of that kind (lower case).
CAPTION_WORDS: dict[str, frozenset[str]] = {
    "templates": TRAIN_WORDS,
    "grammar": GRAMMAR_TRAIN_WORDS,
}
# The words of the templates' captions (data.captions = "templates").
WORDS: frozenset[str] = TRAIN_WORDS

# A word of a prompt: letters, with an inner apostrophe ("dragon's" is one word).
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def unknown_words(prompt: str, captions: str = "templates") -> list[str]:
    """The words of `prompt` that no training caption contains, each once, in prompt order.

    Args:
        prompt: the text given to the model (case and punctuation do not matter; digits are
            not words).
        captions: the kind of captions the model was trained on (`caption_kind`).
    Returns:
        the unknown words, lower case; [] when the model saw every word.
    """
    words = CAPTION_WORDS[captions]
    seen: dict[str, None] = {}
    for word in _WORD.findall(prompt.lower()):
        if word not in words:
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


def caption_kind(recipe: Mapping[str, Any] | None) -> str | None:
    """The kind of Shapes captions a model's recipe trained on: "templates" or "grammar" (None
    when it did not train on Shapes captions)."""
    if not trained_on_shapes_captions(recipe):
        return None
    assert recipe is not None
    kind = recipe["data"].get("captions", "templates")
    return kind if kind in CAPTION_WORDS else None


def _groups(captions: str = "templates") -> dict[str, list[str]]:
    """Name -> the words or phrases of that kind in training captions, in the code's order."""
    relations = [p for phrases in TRAIN_VOCABULARY.relations.values() for p in phrases]
    vertical, horizontal = TRAIN_VOCABULARY.relations["above"], TRAIN_VOCABULARY.relations["left"]
    if TRAIN_VOCABULARY.combined:
        relations.append(TRAIN_VOCABULARY.combined.format(v=vertical[0], h=horizontal[0]))
    counts = sorted(TRAIN_VOCABULARY.templates)
    groups = {
        "objects": [f"{counts[0]} to {counts[-1]} per image"],
        "shapes": [w for words in TRAIN_VOCABULARY.shapes.values() for w in words],
        "colours": [w for words in TRAIN_VOCABULARY.colours.values() for w in words],
        "sizes": [w for words in TRAIN_VOCABULARY.sizes.values() for w in words],
        "positions": list(CELL_NAMES.values()),
        "relations": relations,
    }
    if captions == "grammar":  # the synonyms and phrases of the training grammar too
        for name, table in (
            ("shapes", TRAIN_GRAMMAR.shapes),
            ("colours", TRAIN_GRAMMAR.colours),
            ("sizes", TRAIN_GRAMMAR.sizes),
        ):
            groups[name] += [w for words in table.values() for w in words]
        extra = [p for phrases in TRAIN_GRAMMAR.relations.values() for p in phrases]
        extra += [p for phrases in TRAIN_GRAMMAR.possessive.values() for p in phrases]
        groups["relations"] = list(dict.fromkeys(relations + extra))
        groups["sentences"] = [
            '"... and a blue square below it"',
            '"which is"',
            '"with"',
            '"then"',
            '"the first one"',
            '"first ..., second ..."',
            '"two shapes:"',
            '"draw ..."',
        ]
    return groups


def _examples(count: int, captions: str = "templates") -> list[str]:
    """`count` short training captions (deterministic), as examples of prompts that work."""
    write = caption if captions == "templates" else training_caption
    texts = [write(sample_scene(0, i), 0, i) for i in range(4 * count)]
    return sorted(texts, key=len)[:count]


def describe(width: int = 78, captions: str = "templates") -> str:
    """A multi-line listing of the vocabulary, with example prompts (for `--help`).

    Args:
        width: wrap lines to this many characters.
        captions: the kind of captions the model was trained on (`caption_kind`).
    Returns:
        the text, lines separated by newlines.
    """
    lines = ["The bundled Shapes models know only the words of their training captions:"]
    for name, words in _groups(captions).items():
        line = f"  {name + ':':<11} "
        for i, word in enumerate(words):
            piece = word + ("," if i < len(words) - 1 else "")
            if len(line) + len(piece) + 1 > width and not line.endswith(" " * 13):
                lines.append(line.rstrip())
                line = " " * 14
            line += piece + " "
        lines.append(line.rstrip())
    lines.append("  examples:")
    lines.extend(f'    "{text}"' for text in _examples(2, captions))
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
