"""Captions of Moving Shapes clips, in the training vocabulary and in a paraphrase vocabulary.

A caption has one clause per object, in random order, joined by "while", "and", "as", ";" or a
list: "a small blue star falls while a green square stays in the center". A clause names the
object as the image captions do (colour and shape always, the size in most captions, as a
noun phrase of `diffuse.shapes.scenes`), then what it does:

- its initial direction of motion ("moves to the right", "rises", "moves down and to the
  left") or that it is still ("stays still", "stays in the center"); a caption always names the
  direction the object starts with, also when it bounces off the border later (the sampler
  makes every bounce happen after the first third of the clip);
- usually its speed class ("slowly", "quickly");
- always its growth ("and grows", "while shrinking") and colour change ("and turns blue");
- sometimes its start cell ("a red circle in the top left moves to the right", "..., starting
  on the left"); a still object's cell holds for the whole clip.

Sizes and colours in a clause are those of the first frame. The paraphrase vocabulary
(`clip_paraphrase`) uses the image paraphrase words for objects and places ("a crimson disc")
and its own motion words ("drifts east", "descends westward", "remains motionless"), none of
which a training caption contains (`CLIP_TRAIN_WORDS`, `CLIP_PARAPHRASE_WORDS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from diffuse.shapes.motion import ClipScene, MovingObject
from diffuse.shapes.scenes import (
    PARAPHRASE_VOCABULARY,
    TRAIN_VOCABULARY,
    Vocabulary,
    article,
    seeded_rng,
)

__all__ = [
    "MotionVocabulary",
    "CLIP_TRAIN_VOCABULARY",
    "CLIP_PARAPHRASE_VOCABULARY",
    "CLIP_TRAIN_WORDS",
    "CLIP_PARAPHRASE_WORDS",
    "clip_caption",
    "clip_paraphrase",
]


@dataclass(frozen=True)
class MotionVocabulary:
    """The words of one clip-caption vocabulary.

    Attributes:
        objects: the image vocabulary for colours, shapes, sizes and positions.
        directions: direction (a key of motion.DIRECTION_VECTORS, "still" included) -> verb
            phrases.
        stays: verbs that say "still" before a position ("stays" in "stays in the center").
        speeds: speed class -> adverbs, said before the direction.
        growths: growth -> phrases said after the direction.
        changes: colour-change phrases with a {c} field for the new colour.
        starts: words that introduce a start position after the motion ("starting").
        joins: number of objects -> templates with fields {c1}, {c2}, {c3} (the clauses).
        openings: phrases a caption may start with ("" included).
    """

    objects: Vocabulary
    directions: dict[str, tuple[str, ...]]
    stays: tuple[str, ...]
    speeds: dict[str, tuple[str, ...]]
    growths: dict[str, tuple[str, ...]]
    changes: tuple[str, ...]
    starts: tuple[str, ...]
    joins: dict[int, tuple[str, ...]]
    openings: tuple[str, ...]


def _sideways(right: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Phrases for "right" and, with every 'right' made 'left', for "left"."""
    return {"right": right, "left": tuple(p.replace("right", "left") for p in right)}


CLIP_TRAIN_VOCABULARY = MotionVocabulary(
    objects=TRAIN_VOCABULARY,
    directions={
        **_sideways(
            (
                "moves to the right",
                "moving to the right",
                "moves right",
                "moving right",
                "goes right",
                "slides to the right",
            )
        ),
        "up": ("moves up", "moving up", "goes up", "rises", "rising", "moving upward"),
        "down": ("moves down", "moving down", "goes down", "falls", "falling", "moving downward"),
        "up-right": (
            "moves up and to the right",
            "moving up and to the right",
            "rises to the right",
        ),
        "up-left": ("moves up and to the left", "moving up and to the left", "rises to the left"),
        "down-right": (
            "moves down and to the right",
            "moving down and to the right",
            "falls to the right",
        ),
        "down-left": (
            "moves down and to the left",
            "moving down and to the left",
            "falls to the left",
        ),
        "still": ("stays still", "staying still", "does not move", "stays put", "is not moving"),
    },
    stays=("stays", "staying", "sits still"),
    speeds={"slow": ("slowly",), "fast": ("quickly",)},
    growths={
        "grow": ("and grows", "while growing", "and gets bigger"),
        "shrink": ("and shrinks", "while shrinking", "and gets smaller"),
    },
    changes=("and turns {c}", "turning {c}", "and changes to {c}"),
    starts=("starting",),
    joins={
        1: ("{c1}",),
        2: ("{c1} while {c2}", "{c1} and {c2}", "{c1}, and {c2}", "{c1}; {c2}", "{c1} as {c2}"),
        3: ("{c1}, {c2} and {c3}", "{c1}; {c2}; {c3}", "{c1} while {c2} and {c3}"),
    },
    openings=("", "", "", "a clip of ", "a video of "),
)

CLIP_PARAPHRASE_VOCABULARY = MotionVocabulary(
    objects=PARAPHRASE_VOCABULARY,
    directions={
        "right": ("drifts east", "heads east", "travels eastward", "heading east"),
        "left": ("drifts west", "heads west", "travels westward", "heading west"),
        "up": ("ascends", "climbs", "heads north", "ascending"),
        "down": ("descends", "sinks", "heads south", "descending"),
        "up-right": ("heads northeast", "climbs eastward", "ascending eastward"),
        "up-left": ("heads northwest", "climbs westward", "ascending westward"),
        "down-right": ("heads southeast", "descends eastward", "sinking eastward"),
        "down-left": ("heads southwest", "descends westward", "sinking westward"),
        "still": ("remains motionless", "holds steady", "never budges"),
    },
    stays=("remains", "lingers"),
    speeds={"slow": ("leisurely", "gently"), "fast": ("rapidly", "swiftly")},
    growths={
        "grow": ("and expands", "while swelling"),
        "shrink": ("and contracts", "while dwindling"),
    },
    changes=("and becomes {c}", "becoming {c}"),
    starts=("beginning",),
    joins={
        1: ("{c1}",),
        2: ("{c1} whereas {c2}", "{c1}; meanwhile {c2}"),
        3: ("{c1}, {c2}, plus {c3}", "{c1}; meanwhile {c2} whereas {c3}"),
    },
    openings=("", "", "footage of ", "an animation of "),
)


def _clause(
    obj: MovingObject, rng: np.random.Generator, vocab: MotionVocabulary, with_size: bool
) -> str:
    """One object's clause: noun phrase, then what it does."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    words = vocab.objects
    colour, shape = pick(words.colours[obj.colour]), pick(words.shapes[obj.shape])
    size = pick(words.sizes[obj.size]) + " " if with_size else ""
    noun = article(f"{size}{colour} {shape}")
    place = pick(words.positions[(obj.start.row, obj.start.col)])
    extras = ""
    if obj.growth is not None:
        extras += " " + pick(vocab.growths[obj.growth])
    if obj.colour_to is not None:
        extras += " " + pick(vocab.changes).format(c=pick(words.colours[obj.colour_to]))
    motion = pick(vocab.directions[obj.direction])
    form = rng.random()
    if obj.direction == "still":
        if form < 0.35:
            return f"{noun} {pick(vocab.stays)} {place}{extras}"
        if form < 0.5:
            return f"{noun} {place} {motion}{extras}"
        return f"{noun} {motion}{extras}"
    assert obj.speed is not None
    speed = pick(vocab.speeds[obj.speed]) + " " if rng.random() < 0.75 else ""
    if form < 0.2:
        return f"{noun} {place} {speed}{motion}{extras}"
    if form < 0.35:
        return f"{noun} {speed}{motion}{extras}, {pick(vocab.starts)} {place}"
    return f"{noun} {speed}{motion}{extras}"


def _render_caption(clip: ClipScene, rng: np.random.Generator, vocab: MotionVocabulary) -> str:
    """Fill a random caption of `vocab` for the clip."""
    objects = [clip.objects[i] for i in rng.permutation(len(clip.objects))]
    with_size = rng.random() < 0.6  # sizes are named in most captions, never partially
    clauses = {f"c{k}": _clause(o, rng, vocab, with_size) for k, o in enumerate(objects, 1)}
    joins = vocab.joins[len(objects)]
    text = joins[int(rng.integers(len(joins)))].format(**clauses)
    text = vocab.openings[int(rng.integers(len(vocab.openings)))] + text
    # Surface variety that carries no content: capitalisation and a final full stop.
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text


def clip_caption(clip: ClipScene, seed: int = 0, index: int = 0) -> str:
    """A training-vocabulary caption of the clip, deterministic from (seed, index).

    Names every object's colour and shape, its initial direction (or that it is still), its
    growth and colour change; usually its speed class; sizes for all objects or none;
    sometimes the start cells.
    """
    return _render_caption(clip, seeded_rng(seed, index, 5_000_011), CLIP_TRAIN_VOCABULARY)


def clip_paraphrase(clip: ClipScene, seed: int = 0, index: int = 0) -> str:
    """A caption in the paraphrase vocabulary ("a crimson disc rapidly drifts east"), whose
    content words never occur in training captions. Deterministic from (seed, index)."""
    return _render_caption(clip, seeded_rng(seed, index, 6_000_007), CLIP_PARAPHRASE_VOCABULARY)


def _vocabulary_words(vocab: MotionVocabulary) -> frozenset[str]:
    """Every word a caption of `vocab` can contain (lower case)."""
    objects = vocab.objects
    texts: list[str] = ["a", "an"]
    for group in (objects.colours, objects.shapes, objects.sizes, objects.positions):
        for options in group.values():
            texts.extend(options)
    for group in (vocab.directions, vocab.speeds, vocab.growths, vocab.joins):
        for options in group.values():
            texts.extend(options)
    texts.extend(vocab.stays + vocab.changes + vocab.starts + vocab.openings)
    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[a-z0-9]*\}", " ", text.lower())))
    return frozenset(words)


# All words that can occur in training / paraphrase clip captions.
CLIP_TRAIN_WORDS: frozenset[str] = _vocabulary_words(CLIP_TRAIN_VOCABULARY)
CLIP_PARAPHRASE_WORDS: frozenset[str] = _vocabulary_words(CLIP_PARAPHRASE_VOCABULARY)
