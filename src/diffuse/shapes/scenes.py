"""Procedural Shapes scenes: sampling, captions, paraphrases and the held-out split.

A scene is one to three objects on a dark, low-saturation background (a flat tint or a gentle
gradient). Every object has a shape (circle, square, triangle, star), one of eight colours, a
size (small, large) and its own cell of a 3x3 grid. Everything is deterministic from
(seed, index): `sample_scene(seed, index)` draws the scene and `caption(scene, seed, index)` one
of many caption templates, each of which names the colour and shape of EVERY object and only
states facts that are true of the scene (absolute positions, relations between objects, sizes,
the count).

Held-out split: 2% of the 496 unordered pairs of distinct (colour, shape) objects, e.g.
("blue circle", "yellow triangle"), are chosen by a fixed hash (`HELDOUT_PAIRS`), and four
objects (`HELDOUT_SINGLES`) are never shown alone. A scene is held out when two of its objects
form a held-out pair or it is a held-out object alone; training never shows such a scene (about
8% of draws are skipped). Because every caption names the colour and shape of every object, no
held-out caption string can ever be produced by a training scene, and the held-out set tests
composition: the model saw blue circles and yellow triangles, never together.

Streams come from numpy's PCG64 seeded by (seed, index, attempt); the split itself is a SHA-256
hash, independent of numpy.

Paraphrases (`paraphrase`) describe a scene in a vocabulary whose content words never occur in
training captions ("a crimson disc in the northwest"), to test generalisation of the text
conditioning; the evaluator parses both vocabularies.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "SIZE_EXTENTS",
    "BACKGROUNDS",
    "HELDOUT_FRACTION",
    "CELL_NAMES",
    "ShapeObject",
    "Background",
    "Scene",
    "HELDOUT_PAIRS",
    "HELDOUT_SINGLES",
    "is_heldout",
    "sample_scene",
    "sample_split_scene",
    "caption",
    "paraphrase",
    "article",
    "seeded_rng",
    "true_relations",
    "Vocabulary",
    "TRAIN_VOCABULARY",
    "PARAPHRASE_VOCABULARY",
    "POSITION_WORDS",
    "CAPTION_TEMPLATES",
    "PARAPHRASE_TEMPLATES",
    "TRAIN_WORDS",
    "PARAPHRASE_WORDS",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

# Saturated or bright colours, pairwise >= 90 apart in RGB and all with a channel >= 180, while
# every background keeps all channels <= 92 and low saturation: no colour can be mistaken for
# the background, and antialiased edges (a blend towards the background) stay on the line from
# the background to the object's colour, which the evaluator unmixes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 230, 30),
    "green": (30, 180, 50),
    "cyan": (0, 210, 220),
    "blue": (30, 70, 230),
    "purple": (150, 50, 210),
    "white": (245, 245, 245),
}

SIZES: tuple[str, ...] = ("small", "large")
# Nominal bounding-box side (fraction of the image side) per size; each object jitters it by
# +-SIZE_JITTER. A grid cell is 1/3 = 0.333, so even a large object leaves a margin.
SIZE_EXTENTS: dict[str, float] = {"small": 0.17, "large": 0.26}
SIZE_JITTER = 0.04
# Minimum distance (fraction of the image) from an object's box to its cell's border, so two
# objects in neighbouring cells are >= 0.05 (1.6 px at 32 px) apart and never touch.
CELL_MARGIN = 0.025

# Dark, neutral-ish tints. Scenes use one flat tint or a gradient between two of them.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "charcoal": (24, 24, 28),
    "slate": (46, 52, 64),
    "midnight": (22, 28, 52),
    "umber": (52, 40, 32),
    "moss": (34, 46, 38),
    "grey": (84, 84, 88),
    "plum": (48, 30, 48),
}

# Fraction of the (colour shape, colour shape) object pairs held out of training.
HELDOUT_FRACTION = 0.02
_HELDOUT_SALT = "diffuse-shapes-heldout-v1"

# Cell (row, col) -> canonical name; rows top to bottom, columns left to right.
CELL_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene.

    Attributes:
        shape: one of SHAPES.
        colour: a key of COLOURS.
        size: "small" or "large".
        row, col: grid cell, 0..2 each (row 0 = top, col 0 = left).
        cx, cy: centre of the bounding box, normalised image coordinates (y down).
        extent: larger side of the bounding box, normalised.
    """

    shape: str
    colour: str
    size: str
    row: int
    col: int
    cx: float
    cy: float
    extent: float

    @property
    def name(self) -> str:
        """'colour shape', e.g. 'blue square' (unique within a scene)."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Background:
    """A linear gradient from colour_a to colour_b along `angle` (radians); flat if equal."""

    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    angle: float


@dataclass(frozen=True)
class Scene:
    """A background and one to three objects, each in its own grid cell, with distinct
    (colour, shape) pairs."""

    objects: tuple[ShapeObject, ...]
    background: Background

    def describe(self) -> str:
        """Canonical description, e.g. 'large blue square @ top left; small red star @ center'."""
        parts = sorted(
            f"{o.size} {o.colour} {o.shape} @ {CELL_NAMES[(o.row, o.col)]}" for o in self.objects
        )
        return "; ".join(parts)


def _pair_is_heldout(name_a: str, name_b: str) -> bool:
    """Fixed-hash membership of the unordered object pair in the held-out pairs."""
    key = "+".join(sorted((name_a, name_b)))
    digest = hashlib.sha256(f"{_HELDOUT_SALT}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < round(HELDOUT_FRACTION * 10_000)


def _all_objects() -> list[tuple[str, str]]:
    """Every (colour, shape), in a fixed order."""
    return [(c, s) for c in COLOURS for s in SHAPES]


# Held-out pairs of 'colour shape' names, each sorted, e.g. ('blue circle', 'yellow triangle').
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (a, b)
    for a, b in itertools.combinations(sorted(f"{c} {s}" for c, s in _all_objects()), 2)
    if _pair_is_heldout(a, b)
)
_HELDOUT_SET = frozenset(HELDOUT_PAIRS)

# Objects ('colour shape') never shown ALONE in training (they do appear with other objects):
# the four whose salted hash is lowest, so one-object prompts can be held out too.
HELDOUT_SINGLES: tuple[str, ...] = tuple(
    sorted(
        sorted(
            (f"{c} {s}" for c, s in _all_objects()),
            key=lambda name: hashlib.sha256(f"{_HELDOUT_SALT}:single:{name}".encode()).digest(),
        )[:4]
    )
)


def is_heldout(scene: Scene) -> bool:
    """Whether two objects of the scene form a held-out pair, or it is one held-out single."""
    names = sorted(o.name for o in scene.objects)
    if len(names) == 1:
        return names[0] in HELDOUT_SINGLES
    return any(pair in _HELDOUT_SET for pair in itertools.combinations(names, 2))


def seeded_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from a tuple of non-negative integers (platform independent)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _sample_background(rng: np.random.Generator) -> Background:
    names = list(BACKGROUNDS)
    a = BACKGROUNDS[names[rng.integers(len(names))]]
    if rng.random() < 0.4:
        b = a  # flat tint
    else:
        b = BACKGROUNDS[names[rng.integers(len(names))]]
        if b == a:  # same tint: a gentle brightness ramp instead
            b = tuple(min(92, round(c * 1.6 + 6)) for c in a)
    angle = float(rng.uniform(0.0, 2 * math.pi))
    return Background(colour_a=a, colour_b=b, angle=angle)


def _sample_object(rng: np.random.Generator, shape: str, colour: str, cell: int) -> ShapeObject:
    row, col = divmod(cell, 3)
    size = SIZES[rng.integers(len(SIZES))]
    extent = SIZE_EXTENTS[size] * (1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
    # The box may move inside its cell as long as it stays CELL_MARGIN from the cell border.
    slack = max(0.0, (1 / 3 - extent) / 2 - CELL_MARGIN)
    cx = (col + 0.5) / 3 + rng.uniform(-slack, slack)
    cy = (row + 0.5) / 3 + rng.uniform(-slack, slack)
    return ShapeObject(shape, colour, size, row, col, float(cx), float(cy), float(extent))


def _place(
    rng: np.random.Generator, objects: list[tuple[str, str]], background: Background
) -> Scene:
    """Put (colour, shape) objects in distinct random cells with random sizes."""
    cells = rng.choice(9, size=len(objects), replace=False)
    placed = tuple(
        _sample_object(rng, shape, colour, int(cell))
        for (colour, shape), cell in zip(objects, cells)
    )
    return Scene(objects=placed, background=background)


def sample_scene(seed: int, index: int, attempt: int = 0) -> Scene:
    """Draw a scene deterministically from (seed, index, attempt), ignoring the split.

    One to three objects (uniform), distinct cells, distinct (colour, shape) pairs, uniform
    shape / colour / size, a random background.
    """
    rng = seeded_rng(seed, index, attempt)
    n = int(rng.integers(1, 4))
    everything = _all_objects()
    chosen = [everything[i] for i in rng.choice(len(everything), size=n, replace=False)]
    return _place(rng, chosen, _sample_background(rng))


def _sample_heldout_scene(seed: int, index: int, objects: int | None = None) -> Scene:
    """A held-out scene drawn directly (40x faster than rejecting training scenes): one to
    three objects (uniform, or `objects`); one object is a held-out single, two or three hold
    a held-out pair (plus a random third), in random cells."""
    rng = seeded_rng(seed, index, 3_000_017)
    n = int(rng.integers(1, 4)) if objects is None else objects
    if n == 1:
        name = HELDOUT_SINGLES[int(rng.integers(len(HELDOUT_SINGLES)))]
        colour, shape = name.split(" ")
        return _place(rng, [(colour, shape)], _sample_background(rng))
    pair = HELDOUT_PAIRS[int(rng.integers(len(HELDOUT_PAIRS)))]
    chosen = [(name.split(" ")[0], name.split(" ")[1]) for name in pair]  # (colour, shape)
    if n == 3:
        rest = [o for o in _all_objects() if o not in chosen]
        chosen.append(rest[int(rng.integers(len(rest)))])
    order = rng.permutation(len(chosen))
    return _place(rng, [chosen[i] for i in order], _sample_background(rng))


def sample_split_scene(seed: int, index: int, split: str) -> Scene:
    """The scene of item `index` of a split, deterministic from (seed, index).

    "train": the first of sample_scene(seed, index, attempt = 0, 1, ...) that is not held out.
    "heldout": one to three objects, a held-out single or a scene with a held-out pair.
    "heldout-1", "heldout-2", "heldout-3": held-out scenes of exactly that many objects.
    """
    if split == "heldout":
        return _sample_heldout_scene(seed, index)
    if split in ("heldout-1", "heldout-2", "heldout-3"):
        return _sample_heldout_scene(seed, index, int(split[-1]))
    if split != "train":
        raise ValueError(f"split must be 'train', 'heldout' or 'heldout-1/2/3', got {split!r}")
    for attempt in range(1000):
        scene = sample_scene(seed, index, attempt)
        if not is_heldout(scene):
            return scene
    raise RuntimeError(f"no training scene for seed={seed} index={index}")  # p ~ 0.03^1000


# --------------------------------------------------------------------------------------------
# Captions. A template is a string with fields {oK} (indefinite noun phrase of object K, with or
# without its size), {tK} (definite reference "the colour shape"), {pK} (absolute position of
# object K) and {rJK} (a relation of object J to object K that is true in the scene). Objects
# are numbered in a random order per caption.


@dataclass(frozen=True)
class Vocabulary:
    """Words of one caption vocabulary (training or paraphrase)."""

    colours: dict[str, tuple[str, ...]]
    shapes: dict[str, tuple[str, ...]]
    sizes: dict[str, tuple[str, ...]]
    positions: dict[tuple[int, int], tuple[str, ...]]
    # relation kind ("left", "right", "above", "below") -> phrases
    relations: dict[str, tuple[str, ...]]
    # two relations at once, e.g. "above and to the left of"; empty -> never combined
    combined: str
    templates: dict[int, tuple[str, ...]]


_CORNER = "in the {r} {c}", "in the {r} {c} corner", "at the {r} {c}"

CAPTION_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{o1} {p1}",
        "there is {o1} {p1}",
        "{p1}, {o1}",
        "{o1} sitting {p1}",
        "a picture of {o1} {p1}",
        "{o1} placed {p1}",
        "{o1} on a dark background, {p1}",
        "{o1}",
    ),
    2: (
        "{o1} {r12} {o2}",
        "{o1} is {r12} {o2}",
        "{r12} {o2} there is {o1}",
        "{o1} {p1} and {o2} {p2}",
        "two shapes: {o1} {p1} and {o2} {p2}",
        "{o1} {p1}, {o2} {r21} {t1}",
        "{o1} and {o2}, with {t1} {r12} {t2}",
        "a picture of {o1} {r12} {o2}",
        "{p1} there is {o1}, and {o2} is {p2}",
    ),
    3: (
        "{o1} {p1}, {o2} {p2} and {o3} {p3}",
        "three shapes: {o1} {p1}, {o2} {p2}, and {o3} {p3}",
        "{o1} {r12} {o2}, and {o3} {p3}",
        "{o1} {p1}; {o2} {r21} {t1}; {o3} {r31} {t1}",
        "{o1}, {o2} and {o3}: {t1} is {p1}, {t2} is {p2}, {t3} is {p3}",
        "{o1} {r12} {o2}, {o3} {r32} {t2}",
        "three objects: {o1} {r12} {o2}, and {o3} {p3}",
        "there is {o1} {p1}, {o2} {p2}, and {o3} {r32} {t2}",
    ),
}

PARAPHRASE_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{o1} {p1}",
        "we see {o1} {p1}",
        "{p1} lies {o1}",
        "{o1} rests {p1}",
        "a drawing of {o1} {p1}",
    ),
    2: (
        "{o1} {r12} {o2}",
        "{o1} {p1} plus {o2} {p2}",
        "a pair of figures: {o1} {p1} and {o2} {p2}",
        "{o1} {p1}; {o2} lies {r21} {t1}",
        "we see {o1} {r12} {o2}",
    ),
    3: (
        "{o1} {p1}, {o2} {p2} and {o3} {p3}",
        "a trio of figures: {o1} {p1}, {o2} {p2}, plus {o3} {p3}",
        "{o1} {r12} {o2}, plus {o3} {p3}",
        "{o1} {p1}; {o2} rests {r21} {t1}; {o3} lies {r31} {t1}",
    ),
}


# Words that name a grid row or column; captions build their position phrases from these, and the
# evaluator's parser reads them back. Centre words ("middle", "heart") name neither.
_TRAIN_ROWS = {0: "top", 2: "bottom"}
_TRAIN_COLS = {0: "left", 2: "right"}
_PARA_ROWS = {0: "north", 2: "south"}
_PARA_COLS = {0: "west", 2: "east"}
_PARA_ROW_ADJ = {0: "upper", 2: "lower"}
_PARA_COL_ADJ = {0: "western", 2: "eastern"}


def _position_words() -> dict[str, tuple[int | None, int | None]]:
    words: dict[str, tuple[int | None, int | None]] = {}
    for rows in (_TRAIN_ROWS, _PARA_ROWS, _PARA_ROW_ADJ):
        words.update({w: (r, None) for r, w in rows.items()})
    for cols in (_TRAIN_COLS, _PARA_COLS, _PARA_COL_ADJ):
        words.update({w: (None, c) for c, w in cols.items()})
    for r, row in _PARA_ROWS.items():  # "northwest"
        words.update({row + col: (r, c) for c, col in _PARA_COLS.items()})
    words.update({w: (None, None) for w in ("center", "middle", "heart", "central")})
    return words


# word -> (row or None, col or None): every word that can appear in a position phrase. A phrase's
# cell is (the row it names or 1, the column it names or 1): "top" -> (0, 1), "center" -> (1, 1).
POSITION_WORDS: dict[str, tuple[int | None, int | None]] = _position_words()


def _training_positions() -> dict[tuple[int, int], tuple[str, ...]]:
    rows, cols = _TRAIN_ROWS, _TRAIN_COLS
    out: dict[tuple[int, int], tuple[str, ...]] = {}
    for r in range(3):
        for c in range(3):
            if r != 1 and c != 1:
                out[(r, c)] = tuple(t.format(r=rows[r], c=cols[c]) for t in _CORNER)
            elif r != 1:
                out[(r, c)] = (
                    f"at the {rows[r]}",
                    f"in the {rows[r]} middle",
                    f"at the {rows[r]} center",
                )
            elif c != 1:
                out[(r, c)] = (
                    f"on the {cols[c]}",
                    f"on the {cols[c]} side",
                    f"in the middle {cols[c]}",
                )
            else:
                out[(r, c)] = ("in the center", "in the middle", "at the center")
    return out


def _paraphrase_positions() -> dict[tuple[int, int], tuple[str, ...]]:
    rows, cols, adj_rows, adj_cols = _PARA_ROWS, _PARA_COLS, _PARA_ROW_ADJ, _PARA_COL_ADJ
    out: dict[tuple[int, int], tuple[str, ...]] = {}
    for r in range(3):
        for c in range(3):
            if r != 1 and c != 1:
                out[(r, c)] = (
                    f"in the {rows[r]}{cols[c]}",
                    f"toward the {rows[r]}-{cols[c]}",
                    f"near the {adj_rows[r]} {adj_cols[c]} edge",
                )
            elif r != 1:
                out[(r, c)] = (f"in the {rows[r]}", f"along the {adj_rows[r]} edge")
            elif c != 1:
                out[(r, c)] = (f"in the {cols[c]}", f"along the {adj_cols[c]} edge")
            else:
                out[(r, c)] = ("at the heart of the frame", "in the central spot")
    return out


TRAIN_VOCABULARY = Vocabulary(
    colours={c: (c,) for c in COLOURS},
    shapes={s: (s,) for s in SHAPES},
    sizes={s: (s,) for s in SIZES},
    positions=_training_positions(),
    relations={
        "left": ("to the left of", "left of"),
        "right": ("to the right of", "right of"),
        "above": ("above",),
        "below": ("below",),
    },
    combined="{v} and {h}",  # "above and to the left of"
    templates=CAPTION_TEMPLATES,
)

PARAPHRASE_VOCABULARY = Vocabulary(
    colours={
        "red": ("crimson", "scarlet"),
        "orange": ("tangerine", "amber"),
        "yellow": ("golden", "lemon"),
        "green": ("emerald", "jade"),
        "cyan": ("turquoise", "aqua"),
        "blue": ("azure", "cobalt"),
        "purple": ("violet", "amethyst"),
        "white": ("ivory", "snowy"),
    },
    shapes={
        "circle": ("disc", "disk", "orb"),
        "square": ("box", "block"),
        "triangle": ("wedge", "pyramid"),
        "star": ("pentagram",),
    },
    sizes={"small": ("tiny", "little"), "large": ("big", "huge")},
    positions=_paraphrase_positions(),
    relations={
        "left": ("west of",),
        "right": ("east of",),
        "above": ("higher than", "north of"),
        "below": ("beneath", "lower than", "south of"),
    },
    combined="",
    templates=PARAPHRASE_TEMPLATES,
)


def true_relations(a: ShapeObject, b: ShapeObject) -> tuple[list[str], list[str]]:
    """Vertical and horizontal relation kinds of `a` relative to `b` that hold (by cell)."""
    vertical = ["above"] if a.row < b.row else ["below"] if a.row > b.row else []
    horizontal = ["left"] if a.col < b.col else ["right"] if a.col > b.col else []
    return vertical, horizontal


def article(phrase: str) -> str:
    """'a red circle' / 'an orange star': the indefinite article for `phrase`."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _render_caption(scene: Scene, rng: np.random.Generator, vocab: Vocabulary) -> str:
    """Fill a random template of `vocab` for the scene."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    objects = [scene.objects[i] for i in rng.permutation(len(scene.objects))]
    template = pick(vocab.templates[len(objects)])
    with_size = rng.random() < 0.6  # sizes are named in most captions, never partially
    fields: dict[str, str] = {}
    for k, obj in enumerate(objects, start=1):
        colour, shape = pick(vocab.colours[obj.colour]), pick(vocab.shapes[obj.shape])
        size = pick(vocab.sizes[obj.size]) + " " if with_size else ""
        fields[f"o{k}"] = article(f"{size}{colour} {shape}")
        fields[f"t{k}"] = f"the {colour} {shape}"
        fields[f"p{k}"] = pick(vocab.positions[(obj.row, obj.col)])
        for j, other in enumerate(objects, start=1):
            if j == k:
                continue
            vertical, horizontal = true_relations(obj, other)
            choices = [[v] for v in vertical] + [[h] for h in horizontal]
            if vertical and horizontal and vocab.combined:
                choices.append([vertical[0], horizontal[0]])
            kinds = choices[int(rng.integers(len(choices)))]
            if len(kinds) == 2:
                v_phrase = pick(vocab.relations[kinds[0]])
                h_phrase = pick(vocab.relations[kinds[1]])
                fields[f"r{k}{j}"] = vocab.combined.format(v=v_phrase, h=h_phrase)
            else:
                fields[f"r{k}{j}"] = pick(vocab.relations[kinds[0]])
    text = template.format(**fields)
    # Surface variety that carries no content: capitalisation and a final full stop.
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text


def caption(scene: Scene, seed: int = 0, index: int = 0) -> str:
    """A training-vocabulary caption of the scene, deterministic from (seed, index).

    Every object's colour and shape is named; sizes are named for all objects or none;
    positions are given absolutely ("in the top left") or as true relations ("to the right of
    a small green triangle").
    """
    return _render_caption(scene, seeded_rng(seed, index, 1_000_003), TRAIN_VOCABULARY)


def paraphrase(scene: Scene, seed: int = 0, index: int = 0) -> str:
    """A caption in the paraphrase vocabulary ("a crimson disc in the northwest"), whose content
    words never occur in training captions. Deterministic from (seed, index)."""
    return _render_caption(scene, seeded_rng(seed, index, 2_000_003), PARAPHRASE_VOCABULARY)


def _vocabulary_words(vocab: Vocabulary) -> frozenset[str]:
    """Every word any caption of `vocab` can contain (lower-case, split on non-letters)."""
    texts: list[str] = []
    for group in (vocab.colours, vocab.shapes, vocab.sizes, vocab.positions, vocab.relations):
        for options in group.values():
            texts.extend(options)
    texts.append(vocab.combined)
    for templates in vocab.templates.values():
        texts.extend(templates)
    texts.extend(["a", "an", "the"])
    words: set[str] = set()
    for text in texts:
        text = re.sub(r"\{[a-z0-9]*\}", " ", text)  # drop template fields
        words.update(re.findall(r"[a-z]+", text.lower()))
    return frozenset(words)


# All words that can occur in training / paraphrase captions.
TRAIN_WORDS: frozenset[str] = _vocabulary_words(TRAIN_VOCABULARY)
PARAPHRASE_WORDS: frozenset[str] = _vocabulary_words(PARAPHRASE_VOCABULARY)
