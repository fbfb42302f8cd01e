"""The caption grammar people write: its held-out split, its captions, and the evaluator on it."""

import hashlib
import re

import numpy as np
import pytest

from diffuse.config import ConfigError, DataConfig
from diffuse.shapes.dataset import ShapesDataset
from diffuse.shapes.evaluator import (
    ObjectSpec,
    PromptSpec,
    Relation,
    detect_objects,
    parse_prompt,
    score_detections,
)
from diffuse.shapes.grammar import (
    GRAMMAR_HELDOUT_WORDS,
    GRAMMAR_TRAIN_WORDS,
    HELDOUT_GRAMMAR,
    STRUCTURE_WORDS,
    TRAIN_GRAMMAR,
    grammar_caption,
    heldout_grammar_caption,
    is_heldout_piece,
    is_heldout_word,
    training_caption,
)
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import (
    PARAPHRASE_WORDS,
    TRAIN_WORDS,
    caption,
    paraphrase,
    sample_split_scene,
)
from diffuse.training.datasets import ScenesDataset

SCENES_PER_FORM = 40


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def scenes_by_count():
    """Held-out scenes of 1, 2 and 3 objects with their 64 px detections."""
    out = {}
    for count in (1, 2, 3):
        scenes = [sample_split_scene(11, i, f"heldout-{count}") for i in range(SCENES_PER_FORM)]
        detections = detect_objects(np.stack([render_scene(s, 64) for s in scenes]))
        out[count] = (scenes, detections)
    return out


def test_existing_caption_streams_are_unchanged():
    """The templates' captions and paraphrases (the streams the bundled model's scores were
    measured on) are what they were before the grammar existed."""
    texts = []
    for i in range(200):
        for split in ("train", "heldout"):
            scene = sample_split_scene(7, i, split)
            texts += [caption(scene, 7, i), paraphrase(scene, 7, i)]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    assert digest == "28aa06c518707933082b9334afd4109c7734ba8179b7ddac4ed57dd518c6ab0f"


def test_the_split_is_a_rule_and_both_sides_are_populated():
    for count in (1, 2, 3):
        train, held = TRAIN_GRAMMAR.forms[count], HELDOUT_GRAMMAR.forms[count]
        assert len(train) >= 8 and len(held) >= 3
        assert not set(train) & set(held)
        assert all(is_heldout_piece(f) for f in held) and not any(map(is_heldout_piece, train))
    assert GRAMMAR_HELDOUT_WORDS and not GRAMMAR_HELDOUT_WORDS & GRAMMAR_TRAIN_WORDS
    assert not any(is_heldout_word(w) for w in GRAMMAR_TRAIN_WORDS)
    assert sum(is_heldout_word(w) for w in GRAMMAR_HELDOUT_WORDS) >= 20
    assert not any(is_heldout_word(w) for w in STRUCTURE_WORDS | TRAIN_WORDS)
    # the grammar never borrows the paraphrase vocabulary, so paraphrases stay unseen
    assert not (GRAMMAR_TRAIN_WORDS | GRAMMAR_HELDOUT_WORDS) & (PARAPHRASE_WORDS - TRAIN_WORDS)
    # the grammar teaches what it is about: pronouns, relatives, "next to", "under", "draw"
    for word in ("it", "which", "then", "with", "next", "under", "over", "draw", "first"):
        assert word in GRAMMAR_TRAIN_WORDS


def test_training_captions_never_use_held_out_words_or_forms():
    for i in range(600):
        scene = sample_split_scene(3, i, "train")
        text = grammar_caption(scene, 3, i)
        assert not _words(text) & GRAMMAR_HELDOUT_WORDS, text
        assert not _words(text) & (PARAPHRASE_WORDS - TRAIN_WORDS), text


def test_heldout_captions_are_new():
    """Held-out captions use held-out forms; most contain a word training never shows."""
    trained = {grammar_caption(sample_split_scene(5, i, "heldout"), 5, i) for i in range(300)}
    with_new_word = 0
    for i in range(300):
        text = heldout_grammar_caption(sample_split_scene(5, i, "heldout"), 5, i)
        assert text not in trained
        with_new_word += bool(_words(text) & GRAMMAR_HELDOUT_WORDS)
    assert with_new_word >= 150


def test_captions_are_deterministic_and_varied():
    scene = sample_split_scene(0, 4, "train")
    assert grammar_caption(scene, 0, 4) == grammar_caption(scene, 0, 4)
    texts = {grammar_caption(sample_split_scene(0, i, "train"), 0, i) for i in range(200)}
    assert len(texts) == 200
    mixed = [training_caption(sample_split_scene(0, i, "train"), 0, i) for i in range(400)]
    from_templates = sum(
        m == caption(sample_split_scene(0, i, "train"), 0, i) for i, m in enumerate(mixed)
    )
    assert 80 <= from_templates <= 160  # TEMPLATE_SHARE = 0.3


def test_an_unknown_form_is_refused():
    scene = sample_split_scene(0, 0, "heldout-1")
    with pytest.raises(ValueError, match="not a training form"):
        grammar_caption(scene, form=HELDOUT_GRAMMAR.forms[1][0])


@pytest.mark.parametrize(
    ("side", "count"),
    [(side, count) for side in ("train", "heldout") for count in (1, 2, 3)],
)
def test_ground_truth_renders_satisfy_every_form(scenes_by_count, side, count):
    """Every form of both sides of the grammar, on 40 scenes each: >= 99% satisfied."""
    scenes, detections = scenes_by_count[count]
    grammar = TRAIN_GRAMMAR if side == "train" else HELDOUT_GRAMMAR
    write = grammar_caption if side == "train" else heldout_grammar_caption
    for form in grammar.forms[count]:
        prompts = [write(s, 11, i, form=form) for i, s in enumerate(scenes)]
        report = score_detections(detections, prompts)
        failed = [r.prompt for r in report.results if not r.satisfied]
        assert report.score >= 0.99, (form, failed[:3])


@pytest.mark.parametrize("side", ["train", "heldout"])
def test_mismatched_pairs_score_low(scenes_by_count, side):
    write = grammar_caption if side == "train" else heldout_grammar_caption
    for count in (1, 2, 3):
        scenes, detections = scenes_by_count[count]
        prompts = [write(s, 11, i) for i, s in enumerate(scenes)]
        shifted = list(detections[1:]) + list(detections[:1])
        assert score_detections(shifted, prompts).score <= 0.05


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "Draw a red circle in the top-left corner with a blue square under it!",
            PromptSpec(
                (ObjectSpec("circle", "red", None, (0, 0)), ObjectSpec("square", "blue")),
                (Relation(1, "below", 0),),
            ),
        ),
        (
            "a nice cherry dot which is dead center, and a navy tile to its left",
            PromptSpec(
                (ObjectSpec("circle", "red", None, (1, 1)), ObjectSpec("square", "blue")),
                (Relation(1, "left", 0),),
            ),
        ),
        (
            "a green star at the far right and a white triangle; the second one is next to "
            "the first one",
            PromptSpec(
                (ObjectSpec("star", "green", None, (1, 2)), ObjectSpec("triangle", "white")),
                (Relation(1, "beside", 0),),
            ),
        ),
        (
            "3 shapes: a wee yelow star top left, a jumbo purple cirlce on the right-hand side, "
            "a cyan square centred",
            PromptSpec(
                (
                    ObjectSpec("star", "yellow", "small", (0, 0)),
                    ObjectSpec("circle", "purple", "large", (1, 2)),
                    ObjectSpec("square", "cyan", None, (1, 1)),
                ),
                count=3,
            ),
        ),
    ],
)
def test_parse_grammar_prompts(prompt, expected):
    assert parse_prompt(prompt) == expected


def test_grammar_data_source():
    assert DataConfig(source="scenes", captions="grammar").captions == "grammar"
    with pytest.raises(ConfigError, match="data.captions"):
        DataConfig(source="procedural", captions="grammar")
    with pytest.raises((ConfigError, ValueError, TypeError)):
        ShapesDataset(32, captions="slang")
    plain = ScenesDataset(20, 32, seed=2)
    grammar = ScenesDataset(20, 32, seed=2, captions="grammar")
    assert np.array_equal(plain[3].image, grammar[3].image)  # same scenes, other captions
    assert plain.fingerprint() != grammar.fingerprint()
    scene = grammar.scenes.scene(3)
    assert grammar.captions()[3] == training_caption(scene, 2, 3)
    assert plain.captions()[3] == caption(scene, 2, 3)
