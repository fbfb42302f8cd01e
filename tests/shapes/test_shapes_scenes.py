"""Shapes scenes: determinism, validity, the held-out split, caption truth and vocabularies."""

import itertools
import re
from collections import Counter

import numpy as np
import pytest
import torch

from diffuse.shapes import ShapesDataset, collate_shapes, to_float_image
from diffuse.shapes.evaluator import parse_prompt
from diffuse.shapes.scenes import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    CELL_MARGIN,
    COLOURS,
    HELDOUT_PAIRS,
    HELDOUT_SINGLES,
    PARAPHRASE_TEMPLATES,
    PARAPHRASE_WORDS,
    SHAPES,
    SIZE_EXTENTS,
    SIZE_JITTER,
    TRAIN_WORDS,
    caption,
    is_heldout,
    paraphrase,
    sample_scene,
    sample_split_scene,
)

# Function words both vocabularies may share; every other word is content.
STOPWORDS = {"a", "an", "the", "and", "of", "in", "at", "on", "is", "to", "with"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _scenes(n: int, split: str = "train", seed: int = 0):
    return [sample_split_scene(seed, i, split) for i in range(n)]


def assert_caption_true(text: str, scene) -> None:
    """Every requirement parsed from `text` holds in `scene`, and every object is named."""
    spec = parse_prompt(text)
    assert len(spec.objects) == len(scene.objects), text
    by_name = {(o.colour, o.shape): o for o in scene.objects}
    matched = []
    for required in spec.objects:
        obj = by_name.get((required.colour, required.shape))
        assert obj is not None, (text, required)
        assert required.size in (None, obj.size), text
        assert required.cell in (None, (obj.row, obj.col)), text
        matched.append(obj)
    assert len({id(o) for o in matched}) == len(matched), text
    for rel in spec.relations:
        a, b = matched[rel.subject], matched[rel.reference]
        holds = {
            "left": a.col < b.col,
            "right": a.col > b.col,
            "above": a.row < b.row,
            "below": a.row > b.row,
        }[rel.kind]
        assert holds, (text, rel)
    assert spec.count in (None, len(scene.objects)), text


def test_scenes_are_deterministic_and_seeded():
    assert sample_scene(3, 17) == sample_scene(3, 17)
    assert caption(sample_scene(3, 17), 3, 17) == caption(sample_scene(3, 17), 3, 17)
    assert sample_scene(3, 17) != sample_scene(4, 17)
    assert sample_scene(3, 17) != sample_scene(3, 18)


def test_scenes_are_valid():
    counts = Counter()
    for scene in _scenes(1200):
        objs = scene.objects
        assert 1 <= len(objs) <= 3
        assert len({(o.row, o.col) for o in objs}) == len(objs)
        assert len({(o.colour, o.shape) for o in objs}) == len(objs)
        for o in objs:
            nominal = SIZE_EXTENTS[o.size]
            assert nominal * (1 - SIZE_JITTER) - 1e-9 <= o.extent <= nominal * (1 + SIZE_JITTER)
            # The box keeps CELL_MARGIN from its cell's borders, so neighbours never touch.
            assert abs(o.cx - (o.col + 0.5) / 3) + o.extent / 2 <= 1 / 6 - CELL_MARGIN + 1e-9
            assert abs(o.cy - (o.row + 0.5) / 3) + o.extent / 2 <= 1 / 6 - CELL_MARGIN + 1e-9
            counts.update([o.shape, o.colour, o.size, f"cell{o.row}{o.col}"])
        counts[f"n{len(objs)}"] += 1
    # Roughly uniform attributes (each well represented).
    for name in [*SHAPES, *COLOURS, "small", "large"]:
        assert counts[name] > 180, (name, counts[name])
    assert all(counts[f"cell{r}{c}"] > 180 for r in range(3) for c in range(3))
    assert all(counts[f"n{n}"] > 330 for n in (1, 2, 3))


def test_palette_is_separable_and_never_the_background():
    colours = np.array(list(COLOURS.values()), float)
    pairwise = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert pairwise[~np.eye(len(colours), dtype=bool)].min() >= 90
    backgrounds = np.array(list(BACKGROUNDS.values()), float)
    assert backgrounds.max() <= 92
    assert np.linalg.norm(colours[:, None] - backgrounds[None], axis=-1).min() >= 100


def test_heldout_split_is_disjoint_and_about_two_percent():
    assert 0.01 * 496 <= len(HELDOUT_PAIRS) <= 0.04 * 496
    train = _scenes(2000, "train")
    heldout = _scenes(500, "heldout")
    assert not any(is_heldout(s) for s in train)
    assert all(is_heldout(s) for s in heldout)
    skipped = sum(is_heldout(sample_scene(0, i)) for i in range(2000)) / 2000
    assert 0.04 < skipped < 0.12  # ~4% held-out pairs + 1/3 x 4/32 lone held-out objects
    train_captions = {caption(s, 0, i) for i, s in enumerate(train)}
    heldout_captions = {caption(s, 0, i) for i, s in enumerate(heldout)}
    assert not train_captions & heldout_captions
    # No training scene ever shows a held-out pair together.
    pairs = {
        tuple(sorted(p))
        for s in train
        for p in itertools.combinations([o.name for o in s.objects], 2)
    }
    assert not pairs & set(HELDOUT_PAIRS)
    # ... nor a held-out single object alone, while the held-out split has all three counts.
    assert len(HELDOUT_SINGLES) == 4
    assert not {s.objects[0].name for s in train if len(s.objects) == 1} & set(HELDOUT_SINGLES)
    assert {len(s.objects) for s in heldout} == {1, 2, 3}


@pytest.mark.parametrize("objects", [1, 2, 3])
def test_heldout_splits_by_object_count(objects):
    scenes = _scenes(60, f"heldout-{objects}")
    assert all(len(s.objects) == objects and is_heldout(s) for s in scenes)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_captions_and_paraphrases_are_true(split):
    for i, scene in enumerate(_scenes(800, split, seed=1)):
        assert_caption_true(caption(scene, 1, i), scene)
        assert_caption_true(paraphrase(scene, 1, i), scene)


def test_captions_are_varied_and_use_relations_and_positions():
    assert sum(len(t) for t in CAPTION_TEMPLATES.values()) >= 15
    assert sum(len(t) for t in PARAPHRASE_TEMPLATES.values()) >= 10
    texts = [caption(s, 0, i) for i, s in enumerate(_scenes(1500))]
    joined = " | ".join(texts)
    for phrase in ("left of", "right of", "above", "below", "top left", "center", "bottom"):
        assert phrase in joined, phrase
    assert len(set(texts)) > 0.95 * len(texts)
    specs = [parse_prompt(t) for t in texts]
    assert np.mean([bool(s.relations) for s in specs]) > 0.25
    assert np.mean([any(o.cell for o in s.objects) for s in specs]) > 0.6
    assert np.mean([any(o.size for o in s.objects) for s in specs]) > 0.4


def test_paraphrase_content_words_never_occur_in_training_captions():
    # By construction (the vocabularies) ...
    assert not (PARAPHRASE_WORDS - STOPWORDS) & TRAIN_WORDS
    # ... and on sampled text, which also checks the vocabularies list every word used.
    scenes = _scenes(1500)
    train_seen = set().union(*(_words(caption(s, 0, i)) for i, s in enumerate(scenes)))
    para_seen = set().union(*(_words(paraphrase(s, 0, i)) for i, s in enumerate(scenes)))
    assert train_seen <= TRAIN_WORDS
    assert para_seen <= PARAPHRASE_WORDS
    assert not (para_seen - STOPWORDS) & train_seen
    assert {"crimson", "disc", "northwest", "pentagram"} <= PARAPHRASE_WORDS


def test_dataset_items():
    data = ShapesDataset(size=32, split="train", length=10, seed=5)
    assert len(data) == 10
    image, text, scene = data[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert text == data.caption(3) and scene == data.scene(3)
    assert torch.equal(image, to_float_image(data.image_uint8(3)))
    assert torch.equal(data[-1][0], data[9][0])
    again = ShapesDataset(size=32, split="train", length=10, seed=5)[3]
    assert torch.equal(again[0], image) and again[1] == text
    with pytest.raises(IndexError):
        data[10]
    big = ShapesDataset(size=64, split="heldout", length=4, captions="paraphrase")
    image, text, scene = big[0]
    assert image.shape == (3, 64, 64) and is_heldout(scene)
    assert not (_words(text) - STOPWORDS) & TRAIN_WORDS
    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate_shapes)
    images, texts, scenes = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and len(texts) == len(scenes) == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"split": "test"}, {"captions": "french"}, {"size": 8}, {"length": 0}],
)
def test_dataset_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
        ShapesDataset(**kwargs)
