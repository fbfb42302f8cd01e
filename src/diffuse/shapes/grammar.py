"""A caption grammar people would write, with a held-out part for measuring generalisation.

The caption templates of `diffuse.shapes.scenes` are few and tidy; people write "draw a red
circle in the top-left corner with a blue square under it", "two shapes: a cherry dot and a
navy tile next to it", or "Put a red circle top right please!". This module describes Shapes
scenes in such a grammar:

- sentence forms: relative clauses ("a red circle which is in the centre"), pronouns that refer
  to the first object ("... and a blue square below it", "to its left", "the first one"), lists
  ("a red circle, a blue square and a green star: ..."), "with", "then", ordinals ("first ...,
  second ..."), counting words ("two shapes", "3 shapes"), imperatives ("draw", "make", "put");
- relations "next to" / "beside" (same row, neighbouring column), "under", "over", "on top of",
  "underneath", as well as left / right / above / below;
- everyday synonyms for positions ("top-left corner", "dead center", "on the right-hand side"),
  sizes, colours and shapes ("ruby", "navy", "dot", "tile");
- user noise: typos at a small rate, extra words ("please", "a nice red circle"), capitals and
  punctuation.

Held-out grammar, by one rule (`is_heldout_piece`): a piece of the grammar (a sentence form, a
position or relation phrase, a synonym, a filler) is held out when the SHA-256 of its text with
a fixed salt falls in the lowest fifth, or when it contains a held-out word; a word is held out
when its own hash falls in the lowest fifth, except the structure words the grammar is about
(`STRUCTURE_WORDS`: pronouns, relative words, ordinals, counting words, "with", "then",
"draw", "next to", "under", "over"), which always train. Training captions (`grammar_caption`)
use only training pieces; `heldout_grammar_caption` always uses a held-out form and prefers
held-out words, so none of its forms, and few of its words, were trained on. No grammar piece
uses a word of the paraphrase vocabulary (`scenes.PARAPHRASE_VOCABULARY`) that training
captions lack, so the paraphrase stream stays unseen as well.

Every caption names the colour and shape of every object and only states what is true of the
scene, like the templates' captions; `diffuse.shapes.evaluator` parses all of it. The stream a
model trains on (`training_caption`) mixes the original templates with the training grammar.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from diffuse.shapes.scenes import (
    PARAPHRASE_WORDS,
    TRAIN_VOCABULARY,
    TRAIN_WORDS,
    Scene,
    ShapeObject,
    article,
    caption,
    seeded_rng,
    true_relations,
)

__all__ = [
    "STRUCTURE_WORDS",
    "GrammarPart",
    "TRAIN_GRAMMAR",
    "HELDOUT_GRAMMAR",
    "GRAMMAR_TRAIN_WORDS",
    "GRAMMAR_HELDOUT_WORDS",
    "GRAMMAR_WORDS",
    "TEMPLATE_SHARE",
    "is_heldout_word",
    "is_heldout_piece",
    "grammar_caption",
    "heldout_grammar_caption",
    "training_caption",
    "beside",
]

_SALT = "diffuse-shapes-grammar-v1"
_HELDOUT_PERCENT = 20  # of words and of pieces, by hash

# Words the grammar exists to teach: never held out on their own.
STRUCTURE_WORDS: frozenset[str] = frozenset(
    {
        "it",
        "its",
        "which",
        "that",
        "then",
        "with",
        "first",
        "second",
        "third",
        "one",
        "two",
        "three",
        "draw",
        "next",
        "to",
        "beside",
        "under",
        "over",
        "on",
        "top",
        "of",
        "shapes",
        "objects",
    }
)

# Row / column words the position phrases are built from (the templates' own).
_ROWS = {0: "top", 2: "bottom"}
_COLS = {0: "left", 2: "right"}

# Position phrase patterns per kind of cell; {R} / {C} are the row / column words.
_CORNER_PATTERNS = (
    "in the {R}-{C} corner",
    "{R} {C}",
    "in the {R} {C}-hand corner",
    "at the far {R} {C}",
    "in the {R} {C} area",
    "{R} {C} corner",
    "in the {R} {C} part",
    "tucked in the {R} {C} corner",
)
_ROW_PATTERNS = (
    "at the very {R}",
    "in the {R} centre",
    "{R} middle",
    "at the {R} of the picture",
    "in the {R} middle of the image",
    "{R} center",
)
_COL_PATTERNS = (
    "on the {C}-hand side",
    "at the far {C}",
    "{C} side",
    "middle {C}",
    "in the middle on the {C}",
    "on the far {C}",
)
_CENTRE_PHRASES = (
    "in the centre",
    "dead center",
    "in the middle of the picture",
    "centered",
    "at the centre of the image",
    "centred",
    "smack in the middle",
    "in the very middle",
)

# New position words (besides the templates' top / bottom / left / right / center / middle).
POSITION_SYNONYMS: dict[str, tuple[int | None, int | None]] = {
    "centre": (None, None),
    "centered": (None, None),
    "centred": (None, None),
}
# Words that may sit inside a position phrase ("top left-hand corner of the picture").
POSITION_FILLERS: frozenset[str] = frozenset({"hand", "picture", "image", "area", "part"})

_RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left of", "on the left side of"),
    "right": ("to the right of", "right of", "on the right of", "on the right side of"),
    "above": ("above", "over", "on top of", "just above"),
    "below": ("below", "under", "underneath", "just below"),
    "beside": ("next to", "beside", "alongside", "by the side of"),
}
# Relations to the first object with the pronoun inside the phrase ("to its left").
POSSESSIVE_RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("to its left", "on its left"),
    "right": ("to its right", "on its right"),
}

_COLOURS: dict[str, tuple[str, ...]] = {
    "red": ("ruby", "cherry", "brick"),
    "orange": ("pumpkin", "apricot", "carrot"),
    "yellow": ("canary", "mustard", "sunflower"),
    "green": ("lime", "grass", "leafy"),
    "cyan": ("teal", "aquamarine", "seafoam"),
    "blue": ("navy", "sapphire", "denim"),
    "purple": ("lilac", "lavender", "mauve"),
    "white": ("pearl", "chalk", "milky"),
}
_SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("dot", "ball", "bubble", "round"),
    "square": ("tile", "cube", "quad"),
    "triangle": ("tri", "arrowhead", "delta"),
    "star": ("starburst", "twinkle", "sparkle"),
}
_SIZES: dict[str, tuple[str, ...]] = {
    "small": ("mini", "smallish", "wee", "petite"),
    "large": ("giant", "massive", "jumbo", "bigger"),
}

# Sentence forms. Fields: {oK} "a [size] colour shape", {tK} "the [colour] shape", {pK} a
# position, {rJK} a true relation of object J to object K, {qK1} a true relation of object K to
# the first-mentioned object phrased with a pronoun ("below it", "to its left"). Object 1 is
# always mentioned first, so "it" and "the first one" mean object 1.
_FORMS: dict[int, tuple[str, ...]] = {
    1: (
        "draw {o1} {p1}",
        "{o1}, {p1}",
        "{o1} which is {p1}",
        "one shape: {o1} {p1}",
        "just {o1} {p1}",
        "{p1}: {o1}",
        "make {o1} {p1}",
        "i want {o1} {p1}",
        "{o1} ({p1})",
        "{o1} located {p1}",
        "show me {o1} {p1}",
        "put {o1} {p1}",
        "{o1} drawn {p1}",
        "paint {o1} {p1}",
        "an image of {o1} {p1}",
        "{o1} {p1} on a plain background",
        "{o1} that is {p1}",
        "draw {o1}",
    ),
    2: (
        "{o1} {p1} and {o2} {q21}",
        "{o1} {p1} with {o2} {q21}",
        "draw {o1} {p1}, then {o2} {q21}",
        "{o1} which is {p1}, and {o2} which is {p2}",
        "{o1} that is {r12} {o2}",
        "two shapes, {o1} and {o2}, {t1} is {r12} {t2}",
        "make {o1} {p1} and put {o2} {p2}",
        "{p1} {o1}, {p2} {o2}",
        "{o1} ({p1}) and {o2} ({p2})",
        "first {o1} {p1}, second {o2} {p2}",
        "{o1} {p1}. {o2} {r21} the first one",
        "{o1} {p1} and {o2} {p2}; the second one is {r21} the first one",
        "show me {o1} and {o2}, {t2} sitting {r21} {t1}",
        "{o1} {p1}, {o2} {q21}",
        "an image with {o1} {p1} and {o2} {p2}",
        "draw {o1} {r12} {o2}",
        "i want {o1} {p1} and {o2} {q21}",
        "{o1} and {o2}: {t1} {p1}, {t2} {p2}",
        "2 shapes: {o1} {p1} and {o2} {p2}",
        "{o1} with {o2} {q21}",
    ),
    3: (
        "{o1} {p1}, {o2} {q21} and {o3} {q31}",
        "draw {o1} {p1}, {o2} {p2} and {o3} {p3}",
        "three shapes: {o1}, {o2} and {o3}; {t1} is {p1}, {t2} is {p2} and {t3} is {p3}",
        "{o1} {p1} with {o2} {q21}, and {o3} {p3}",
        "first {o1} {p1}, second {o2} {p2}, third {o3} {p3}",
        "{o1} which is {p1}, {o2} which is {p2}, and {o3} which is {p3}",
        "{o1} {r12} {o2}, and {o3} {r31} the first one",
        "{p1} {o1}; {p2} {o2}; {p3} {o3}",
        "{o1}, {o2}, {o3}: {t1} {p1}, {t2} {p2}, {t3} {p3}",
        "{o1} {p1}. {o2} {q21}. {o3} {p3}",
        "make an image with {o1} {p1}, {o2} {p2} and {o3} {p3}",
        "{o1} {p1}, then {o2} {q21}, then {o3} {r32} {t2}",
        "3 shapes: {o1} {p1}, {o2} {p2}, {o3} {p3}",
        "{o1} that is {r12} {o2}, and {o3} that is {p3}",
        "i want {o1} {p1}, {o2} {p2} and {o3} {p3}",
        "{o1} {p1} with {o2} {p2} and {o3} {p3}",
        "three objects: {o1} {p1}, {o2} {q21}, {o3} {q31}",
        "put {o1} {p1}, {o2} {p2}, and {o3} {r31} the first one",
    ),
}

# Noise: words a user adds around a prompt or before a colour.
_PREFIXES = (
    "please",
    "hey,",
    "hi",
    "can you draw",
    "i would like",
    "quick sketch:",
    "ok so",
    "could you make",
)
_SUFFIXES = (
    "please",
    "thanks",
    "thank you",
    "nothing else",
    "on a dark background",
    "simple style",
    "if possible",
    "cheers",
)
_ADJECTIVES = ("nice", "solid", "bright", "flat", "plain", "simple", "shiny", "pretty")
_ENDINGS = ("", "", "", ".", "!", "?", "...", "!!")

# Share of a training stream's captions written by the original templates (`scenes.caption`),
# so a model keeps what it learnt from them.
TEMPLATE_SHARE = 0.3
_TYPO_RATE = 0.025  # per word of five letters or more


# Position and relation phrases of the original templates: always training pieces.
_TEMPLATE_PHRASES: frozenset[str] = frozenset(
    phrase
    for group in (TRAIN_VOCABULARY.positions, TRAIN_VOCABULARY.relations)
    for phrases in group.values()
    for phrase in phrases
)


def _hash_fifth(kind: str, text: str) -> bool:
    digest = hashlib.sha256(f"{_SALT}:{kind}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < _HELDOUT_PERCENT


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", re.sub(r"\{[a-z0-9]*\}", " ", text.lower()))


def is_heldout_word(word: str) -> bool:
    """Whether `word` is held out of training captions: a word new to the grammar (not in the
    templates' vocabulary, not a structure word) whose salted hash falls in the lowest fifth."""
    word = word.lower()
    if word in TRAIN_WORDS or word in STRUCTURE_WORDS:
        return False
    return _hash_fifth("word", word)


def is_heldout_piece(text: str) -> bool:
    """Whether a grammar piece (form, phrase, synonym, filler) is held out of training: its
    salted hash falls in the lowest fifth, or it contains a held-out word. The templates' own
    phrases are never held out."""
    if text in _TEMPLATE_PHRASES:
        return False
    if any(is_heldout_word(w) for w in _words(text)):
        return True
    return _hash_fifth("piece", text)


@dataclass(frozen=True)
class GrammarPart:
    """The pieces of one side of the grammar (training or held-out)."""

    forms: dict[int, tuple[str, ...]]
    positions: dict[tuple[int, int], tuple[str, ...]]
    relations: dict[str, tuple[str, ...]]
    possessive: dict[str, tuple[str, ...]]
    colours: dict[str, tuple[str, ...]]
    shapes: dict[str, tuple[str, ...]]
    sizes: dict[str, tuple[str, ...]]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    adjectives: tuple[str, ...]

    def words(self) -> frozenset[str]:
        """Every word any of its pieces contains."""
        texts: list[str] = []
        for group in (self.forms, self.positions, self.relations, self.possessive):
            for options in group.values():
                texts.extend(options)
        for group in (self.colours, self.shapes, self.sizes):
            for options in group.values():
                texts.extend(options)
        texts.extend(self.prefixes + self.suffixes + self.adjectives)
        return frozenset(w for t in texts for w in _words(t)) | {"a", "an", "the", "it"}


def _grammar_positions() -> dict[tuple[int, int], tuple[str, ...]]:
    out: dict[tuple[int, int], tuple[str, ...]] = {}
    for r in range(3):
        for c in range(3):
            if r != 1 and c != 1:
                patterns = _CORNER_PATTERNS
            elif r != 1:
                patterns = _ROW_PATTERNS
            elif c != 1:
                patterns = _COL_PATTERNS
            else:
                patterns = _CENTRE_PHRASES
            out[(r, c)] = tuple(p.format(R=_ROWS.get(r, ""), C=_COLS.get(c, "")) for p in patterns)
    return out


def _split(heldout: bool) -> GrammarPart:
    """The training (heldout=False) or held-out side of every piece list."""

    def keep(options: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(o for o in options if is_heldout_piece(o) == heldout)

    def keep_map(group: dict) -> dict:
        return {key: keep(options) for key, options in group.items()}

    positions = keep_map(_grammar_positions())
    relations = keep_map(_RELATIONS)
    if not heldout:  # the templates' own phrases are always part of the training grammar
        positions = {
            cell: TRAIN_VOCABULARY.positions[cell] + options for cell, options in positions.items()
        }
        relations = {
            kind: tuple(dict.fromkeys(TRAIN_VOCABULARY.relations.get(kind, ()) + options))
            for kind, options in relations.items()
        }
    return GrammarPart(
        forms=keep_map(_FORMS),
        positions=positions,
        relations=relations,
        possessive=keep_map(POSSESSIVE_RELATIONS),
        colours=keep_map(_COLOURS),
        shapes=keep_map(_SHAPES),
        sizes=keep_map(_SIZES),
        prefixes=keep(_PREFIXES),
        suffixes=keep(_SUFFIXES),
        adjectives=keep(_ADJECTIVES),
    )


TRAIN_GRAMMAR: GrammarPart = _split(heldout=False)
HELDOUT_GRAMMAR: GrammarPart = _split(heldout=True)
# Words of training-grammar captions (besides the templates' TRAIN_WORDS), of held-out ones.
GRAMMAR_TRAIN_WORDS: frozenset[str] = TRAIN_GRAMMAR.words() | TRAIN_WORDS
GRAMMAR_HELDOUT_WORDS: frozenset[str] = HELDOUT_GRAMMAR.words() - GRAMMAR_TRAIN_WORDS
GRAMMAR_WORDS: frozenset[str] = GRAMMAR_TRAIN_WORDS | GRAMMAR_HELDOUT_WORDS
# Words whose misspellings the typo noise avoids producing (and the evaluator corrects to).
_KNOWN_WORDS: frozenset[str] = GRAMMAR_WORDS | PARAPHRASE_WORDS


def beside(a: ShapeObject, b: ShapeObject) -> bool:
    """'a next to b': the same row, neighbouring columns (as the evaluator checks it)."""
    return a.row == b.row and abs(a.col - b.col) == 1


def _typo(word: str, rng: np.random.Generator) -> str:
    """One slip of the keyboard: two neighbouring letters swapped, one dropped or doubled."""
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _noise(text: str, rng: np.random.Generator, part: GrammarPart, commas: bool = False) -> str:
    """Typos, extra words, capitals and punctuation (none of which changes the content);
    `commas`: commas may be dropped too (a form whose commas carry no meaning)."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) >= 5 and word.isalpha() and rng.random() < _TYPO_RATE:
            slip = _typo(word, rng)
            if slip.lower() not in _KNOWN_WORDS:
                words[i] = slip
    text = " ".join(words)
    if part.prefixes and rng.random() < 0.15:
        text = part.prefixes[int(rng.integers(len(part.prefixes)))] + " " + text
    if part.suffixes and rng.random() < 0.15:
        text = text + ", " + part.suffixes[int(rng.integers(len(part.suffixes)))]
    style = rng.random()
    if style < 0.05:
        text = text.upper()
    elif style < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.08 and commas:
        text = text.replace(",", "")
    return text + _ENDINGS[int(rng.integers(len(_ENDINGS)))]


def _merge(train: tuple[str, ...], held: tuple[str, ...], prefer_held: bool) -> tuple[str, ...]:
    return held if prefer_held and held else train or held


def _render(scene: Scene, rng: np.random.Generator, heldout: bool, form: str | None = None) -> str:
    """Fill a random form of the training grammar (or a held-out form, preferring held-out
    words) for the scene, or the given `form`, then add user noise."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    def choose(group: str, key: object) -> str:
        """A training piece, or for held-out captions a held-out one half of the time."""
        train = getattr(TRAIN_GRAMMAR, group).get(key, ())
        held = getattr(HELDOUT_GRAMMAR, group).get(key, ()) if heldout else ()
        return pick(_merge(train, held, bool(rng.random() < 0.5)))

    def synonym(group: str, canonical: str) -> str:
        """The plain word half of the time, otherwise a synonym of the side asked for."""
        if rng.random() < 0.5:
            return canonical
        return choose(group, canonical) if getattr(TRAIN_GRAMMAR, group)[canonical] else canonical

    part = HELDOUT_GRAMMAR if heldout else TRAIN_GRAMMAR
    objects = [scene.objects[i] for i in rng.permutation(len(scene.objects))]
    forms = part.forms[len(objects)]
    if form is None:
        form = pick(forms)
    elif form not in forms:
        side = "held-out" if heldout else "training"
        raise ValueError(f"not a {side} form for {len(objects)} objects: {form!r}")
    with_size = rng.random() < 0.6
    adjectives = _merge(TRAIN_GRAMMAR.adjectives, HELDOUT_GRAMMAR.adjectives, heldout)
    shapes = [o.shape for o in objects]
    fields: dict[str, str] = {}
    for k, obj in enumerate(objects, start=1):
        colour, shape = synonym("colours", obj.colour), synonym("shapes", obj.shape)
        size = synonym("sizes", obj.size) + " " if with_size else ""
        extra = pick(adjectives) + " " if rng.random() < 0.08 else ""
        fields[f"o{k}"] = article(f"{extra}{size}{colour} {shape}")
        # "the circle" when the scene has one circle and the word is the plain one
        unique = shapes.count(obj.shape) == 1 and shape == obj.shape and rng.random() < 0.3
        fields[f"t{k}"] = f"the {shape}" if unique else f"the {colour} {shape}"
        fields[f"p{k}"] = choose("positions", (obj.row, obj.col))
        for j, other in enumerate(objects, start=1):
            if j == k:
                continue
            vertical, horizontal = true_relations(obj, other)
            choices = [[v] for v in vertical] + [[h] for h in horizontal]
            if beside(obj, other):
                choices.append(["beside"])
            if vertical and horizontal:
                choices.append([vertical[0], horizontal[0]])
            kinds = choices[int(rng.integers(len(choices)))]
            if len(kinds) == 2:
                phrase = f"{choose('relations', kinds[0])} and {choose('relations', kinds[1])}"
            else:
                phrase = choose("relations", kinds[0])
            fields[f"r{k}{j}"] = phrase
            if j == 1:
                possessive = _merge(
                    TRAIN_GRAMMAR.possessive.get(kinds[0], ()),
                    HELDOUT_GRAMMAR.possessive.get(kinds[0], ()),
                    heldout and bool(rng.random() < 0.5),
                )
                if len(kinds) == 1 and possessive and rng.random() < 0.3:
                    fields[f"q{k}1"] = pick(possessive)
                else:
                    fields[f"q{k}1"] = phrase + " it"
    # "{p1} {o1}, {p2} {o2}": without the comma the second position would read as the first's
    commas = re.search(r"\{p\d\}:? \{o", form) is None
    return _noise(form.format(**fields), rng, part, commas)


def grammar_caption(scene: Scene, seed: int = 0, index: int = 0, form: str | None = None) -> str:
    """A caption of the scene in the training grammar, with user noise; deterministic from
    (seed, index). `form`: one of `TRAIN_GRAMMAR.forms[len(scene.objects)]` (default: random)."""
    return _render(scene, seeded_rng(seed, index, 4_000_037), heldout=False, form=form)


def heldout_grammar_caption(
    scene: Scene, seed: int = 0, index: int = 0, form: str | None = None
) -> str:
    """A caption of the scene in a held-out form, preferring held-out words (never produced by
    `grammar_caption`); deterministic from (seed, index). `form`: one of
    `HELDOUT_GRAMMAR.forms[len(scene.objects)]` (default: random)."""
    return _render(scene, seeded_rng(seed, index, 5_000_011), heldout=True, form=form)


def training_caption(scene: Scene, seed: int = 0, index: int = 0) -> str:
    """The caption a grammar-trained model learns from: the original templates
    (`scenes.caption`) with probability TEMPLATE_SHARE, else `grammar_caption`."""
    if seeded_rng(seed, index, 6_000_001).random() < TEMPLATE_SHARE:
        return caption(scene, seed, index)
    return grammar_caption(scene, seed, index)
