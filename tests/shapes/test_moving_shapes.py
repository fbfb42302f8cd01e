"""Moving Shapes: clip sampling, kinematics, held-out split, renderer, captions and dataset."""

import re
from collections import Counter

import numpy as np
import pytest
import torch

from diffuse.shapes.clip_captions import (
    CLIP_PARAPHRASE_VOCABULARY,
    CLIP_PARAPHRASE_WORDS,
    CLIP_TRAIN_WORDS,
    clip_caption,
    clip_paraphrase,
)
from diffuse.shapes.clip_dataset import MovingShapesDataset, collate_clips
from diffuse.shapes.motion import (
    DIRECTION_VECTORS,
    DIRECTIONS,
    HELDOUT_MOTIONS,
    MIN_BOUNCE_TIME,
    MIN_GAP,
    frame_times,
    is_heldout_clip,
    render_clip,
    sample_clip_scenes,
)
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import COLOURS, SHAPES


@pytest.fixture(scope="module")
def train_clips():
    return sample_clip_scenes(300, seed=0, split="train")


@pytest.fixture(scope="module")
def heldout_clips():
    return sample_clip_scenes(300, seed=0, split="heldout")


def test_sampling_is_deterministic_and_seeded(train_clips):
    assert sample_clip_scenes(20, seed=0) == train_clips[:20]
    assert sample_clip_scenes(20, seed=1) != train_clips[:20]
    assert sample_clip_scenes(5, 0, "heldout") != sample_clip_scenes(5, 0, "train")


def test_distribution_covers_every_option(train_clips):
    objects = [o for clip in train_clips for o in clip.objects]
    counts = Counter(len(clip.objects) for clip in train_clips)
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 60  # near uniform
    assert set(Counter(o.direction for o in objects)) == set(DIRECTIONS)
    assert {o.speed for o in objects} == {None, "slow", "fast"}
    assert {o.growth for o in objects} == {None, "grow", "shrink"}
    assert any(o.colour_to for o in objects)
    assert all((o.speed is None) == (o.direction == "still") for o in objects)
    assert max(len(c.objects) for c in sample_clip_scenes(50, 0, max_objects=1)) == 1


def test_heldout_split_is_disjoint_from_training(train_clips, heldout_clips):
    assert 10 <= len(HELDOUT_MOTIONS) <= 40  # 8% of 32 objects x 9 directions
    assert not any(is_heldout_clip(c) for c in train_clips)
    assert all(is_heldout_clip(c) for c in heldout_clips)
    seen = {(o.name, o.direction) for c in heldout_clips for o in c.objects}
    assert len(seen & set(HELDOUT_MOTIONS)) > len(HELDOUT_MOTIONS) // 2


def test_motion_is_constant_velocity_with_bounces(train_clips, heldout_clips):
    t = np.linspace(0.0, 1.0, 401)
    bounced = 0
    for clip in train_clips + heldout_clips:
        for o in clip.objects:
            cx, cy = o.centres(t)
            low, high = o.walls()
            assert cx.min() >= low - 1e-9 and cx.max() <= high + 1e-9
            half = o.extents(t) / 2
            assert (cx - half).min() > 0 and (cx + half).max() < 1  # never leaves the frame
            speed = np.hypot(np.diff(cx), np.diff(cy)) / np.diff(t)
            assert np.allclose(speed, o.distance, atol=1e-6) or o.first_bounce() < 1
            assert o.first_bounce() >= MIN_BOUNCE_TIME
            early = t <= MIN_BOUNCE_TIME
            dx, dy = DIRECTION_VECTORS[o.direction]
            assert np.allclose(cx[early], o.start.cx + dx * o.distance * t[early])
            assert np.allclose(cy[early], o.start.cy + dy * o.distance * t[early])
            bounced += o.first_bounce() < 1
        for i, a in enumerate(clip.objects):  # boxes keep apart at every time
            for b in clip.objects[i + 1 :]:
                (xa, ya), (xb, yb) = a.centres(t), b.centres(t)
                reach = (a.extents(t) + b.extents(t)) / 2
                gap = np.maximum(np.abs(xa - xb) - reach, np.abs(ya - yb) - reach)
                assert gap.min() >= MIN_GAP - 1e-9
    assert bounced > 50


def test_growth_and_colour_change(train_clips):
    objects = [o for clip in train_clips for o in clip.objects]
    for o in objects:
        first, last = o.extents(np.array([0.0, 1.0]))
        if o.growth == "grow":
            assert o.size == "small" and last / first > 1.4
        elif o.growth == "shrink":
            assert o.size == "large" and first / last > 1.4
        else:
            assert first == last
        colours = o.colours(frame_times(8))
        if o.colour_to:
            assert colours == [o.colour] * 4 + [o.colour_to] * 4 and o.colour_to != o.colour


def test_render_matches_the_image_renderer_frame_by_frame(train_clips):
    for clip in train_clips[:10]:
        for frames, resolution in ((8, 32), (16, 64), (1, 32)):
            video = render_clip(clip, frames, resolution)
            assert video.shape == (frames, resolution, resolution, 3)
            assert video.dtype == np.uint8
            for k, t in enumerate(frame_times(frames)):
                assert np.array_equal(video[k], render_scene(clip.at(t), resolution))


def test_frame_count_samples_the_same_motion(train_clips):
    for clip in train_clips[:10]:
        assert np.array_equal(render_clip(clip, 15, 32)[::2], render_clip(clip, 8, 32))


def test_bad_arguments_fail_clearly(train_clips):
    with pytest.raises(ValueError, match="frames must be >= 1, got 0"):
        render_clip(train_clips[0], 0, 32)
    with pytest.raises(ValueError, match="resolution must be >= 16, got 8"):
        render_clip(train_clips[0], 8, 8)
    with pytest.raises(ValueError, match="split must be one of train, heldout, got 'test'"):
        sample_clip_scenes(1, 0, "test")
    with pytest.raises(ValueError, match="max_objects must be 1, 2 or 3, got 4"):
        sample_clip_scenes(1, 0, max_objects=4)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_captions_are_deterministic_and_name_every_object(train_clips):
    for i, clip in enumerate(train_clips[:100]):
        text = clip_caption(clip, 0, i)
        assert text == clip_caption(clip, 0, i)
        assert _words(text) <= CLIP_TRAIN_WORDS, text
        for o in clip.objects:
            assert o.colour in _words(text) and o.shape in _words(text), text
            if o.colour_to:
                assert o.colour_to in _words(text), text
    assert len({clip_caption(train_clips[0], 0, i) for i in range(20)}) > 5


def test_paraphrases_use_words_training_never_shows(heldout_clips):
    vocab = CLIP_PARAPHRASE_VOCABULARY
    motion_texts = [p for ps in vocab.directions.values() for p in ps]
    motion_texts += [p for ps in vocab.speeds.values() for p in ps] + list(vocab.stays)
    for text in motion_texts:  # each motion phrase has a word training never uses
        assert _words(text) - CLIP_TRAIN_WORDS, text
    for i, clip in enumerate(heldout_clips[:100]):
        text = clip_paraphrase(clip, 0, i)
        assert _words(text) <= CLIP_PARAPHRASE_WORDS, text
        assert not _words(text) & (set(COLOURS) | set(SHAPES)), text


def test_dataset_items_and_collate():
    data = MovingShapesDataset(6, frames=8, resolution=32, split="heldout", seed=3)
    clip, text = data[2]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    assert text == data.caption(2) == clip_caption(data.clip_scene(2), 3, 2)
    frames = data.frames_uint8(2)
    assert torch.equal(clip, torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)
    again = MovingShapesDataset(6, frames=8, resolution=32, split="heldout", seed=3)
    assert torch.equal(again[2][0], clip) and data[-1][1] == data[5][1]
    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate_clips)
    clips, texts = next(iter(loader))
    assert clips.shape == (4, 3, 8, 32, 32) and len(texts) == 4 and texts[2] == text
    para = MovingShapesDataset(2, 8, 32, "heldout", seed=3, captions="paraphrase")
    assert para.caption(0) == clip_paraphrase(para.clip_scene(0), 3, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 0}, "count must be >= 1, got 0"),
        ({"frames": 0}, "frames must be >= 1, got 0"),
        ({"resolution": 12}, "resolution must be >= 16, got 12"),
        ({"split": "val"}, "split must be one of train, heldout, got 'val'"),
        ({"captions": "grammar"}, "captions must be one of train, paraphrase, got 'grammar'"),
    ],
)
def test_dataset_rejects_bad_arguments(kwargs, message):
    args = {"count": 4, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        MovingShapesDataset(**args)
    with pytest.raises(IndexError, match="index 4 out of range for 4 clips"):
        MovingShapesDataset(4)[4]
