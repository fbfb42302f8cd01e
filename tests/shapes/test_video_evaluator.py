"""Clip evaluator: parsing, ground-truth validation, rejection of wrong, reversed and shuffled
clips, tracking identity and flicker."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
import torch

from diffuse.shapes.clip_captions import clip_caption, clip_paraphrase
from diffuse.shapes.motion import ClipScene, render_clip, sample_clip_scenes
from diffuse.shapes.video_evaluator import (
    REPORTED_RATES,
    ClipObjectSpec,
    detect_clip_objects,
    evaluate_clips,
    parse_clip_prompt,
    score_clip_detections,
)

N_VALIDATION = 120


def test_parses_training_and_paraphrase_phrases():
    spec = parse_clip_prompt("a small blue star falls while a green square stays in the center")
    assert spec.objects == (
        ClipObjectSpec("star", "blue", "small", None, "down"),
        ClipObjectSpec("square", "green", None, (1, 1), "still"),
    )
    spec = parse_clip_prompt(
        "A large red circle in the top left quickly moves up and to the right and turns blue"
        " while shrinking."
    )
    assert spec.objects == (
        ClipObjectSpec("circle", "red", "large", (0, 0), "up-right", "fast", "shrink", "blue"),
    )
    spec = parse_clip_prompt(
        "a crimson disc rapidly drifts east; meanwhile an azure box holds steady"
    )
    assert [(o.colour, o.shape, o.direction, o.speed) for o in spec.objects] == [
        ("red", "circle", "right", "fast"),
        ("blue", "square", "still", None),
    ]
    assert parse_clip_prompt("a red circle").objects == (ClipObjectSpec("circle", "red"),)
    assert parse_clip_prompt("a dragon flying").objects == ()


@pytest.mark.parametrize("captioner", [clip_caption, clip_paraphrase])
def test_every_generated_caption_parses_to_its_clip(captioner):
    for split in ("train", "heldout"):
        for i, clip in enumerate(sample_clip_scenes(150, 1, split)):
            text = captioner(clip, 1, i)
            parsed = Counter(
                (o.colour, o.shape, o.direction, o.growth, o.colour_to)
                for o in parse_clip_prompt(text).objects
            )
            truth = Counter(
                (o.colour, o.shape, o.direction, o.growth, o.colour_to) for o in clip.objects
            )
            assert parsed == truth, text


@pytest.fixture(scope="module")
def validation():
    """Clips of both splits with their captions and paraphrases."""
    out = {}
    for split in ("train", "heldout"):
        clips = sample_clip_scenes(N_VALIDATION, 0, split)
        captions = [clip_caption(c, 0, i) for i, c in enumerate(clips)]
        paraphrases = [clip_paraphrase(c, 0, i) for i, c in enumerate(clips)]
        out[split] = clips, captions, paraphrases
    return out


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("frames, resolution", [(8, 32), (16, 32), (8, 64), (16, 64)])
def test_ground_truth_clips_satisfy_their_captions(validation, split, frames, resolution):
    clips, captions, paraphrases = validation[split]
    video = np.stack([render_clip(c, frames, resolution) for c in clips])
    detections = detect_clip_objects(video)
    for prompts in (captions, paraphrases):
        report = score_clip_detections(detections, prompts)
        assert report.score >= 0.99, report.summary()
        shifted = prompts[1:] + prompts[:1]  # clip i with the prompt of clip i + 1
        assert score_clip_detections(detections, shifted).score < 0.05


def test_reversed_and_shuffled_clips_fail_direction(validation):
    clips, captions, _ = validation["heldout"]
    video = np.stack([render_clip(c, 16, 32) for c in clips])
    reversed_report = evaluate_clips(video[:, ::-1].copy(), captions)
    # A mover that never bounces runs the other way when played backwards.
    unbounced = [
        any(o.direction != "still" and o.first_bounce() >= 1 for o in c.objects) for c in clips
    ]
    failed = [not r.checks["direction"] for r, u in zip(reversed_report.results, unbounced) if u]
    assert len(failed) > 50 and np.mean(failed) >= 0.98
    assert reversed_report.score < 0.1
    rng = np.random.default_rng(0)
    shuffled = np.stack([clip[rng.permutation(16)] for clip in video])
    moving = [any(o.direction != "still" for o in c.objects) for c in clips]
    shuffled_report = evaluate_clips(shuffled, captions)
    assert all(not r.checks["direction"] for r, m in zip(shuffled_report.results, moving) if m)


def test_layouts_and_report_json(validation):
    clips, captions, _ = validation["train"]
    video = np.stack([render_clip(c, 8, 32) for c in clips[:6]])
    floats = torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [N, 3, T, H, W]
    a = evaluate_clips(video, captions[:6])
    b = evaluate_clips(floats, captions[:6])
    c = evaluate_clips(list(floats), captions[:6])
    assert a.summary() == b.summary() == c.summary() and a.score == 1.0
    assert evaluate_clips(video[0], captions[:1]).score == 1.0  # one clip without N
    text = json.dumps({**a.summary(), "results": [r.summary() for r in a.results]})
    assert set(json.loads(text)["breakdown"]) == set(REPORTED_RATES)


def test_bad_input_fails_clearly(validation):
    clips, captions, _ = validation["train"]
    video = np.stack([render_clip(c, 8, 32) for c in clips[:2]])
    with pytest.raises(ValueError, match="got 2 clips but 1 prompts"):
        evaluate_clips(video, captions[:1])
    with pytest.raises(ValueError, match=r"got shape \(8, 32, 32\)"):
        evaluate_clips(video[0, :, :, :, 0], captions[:1])
    bad = torch.zeros(1, 3, 8, 32, 32)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_clips(bad, captions[:1])


def _with_objects(clip: ClipScene, objects) -> ClipScene:
    return dataclasses.replace(clip, objects=tuple(objects))


def test_identity_and_flicker_are_caught():
    clip = next(c for c in sample_clip_scenes(50, 2) if len(c.objects) == 2)
    obj = clip.objects[0]
    prompt = clip_caption(clip, 2, 0)
    video = render_clip(clip, 16, 32)
    assert evaluate_clips(video, [prompt]).score == 1.0
    # The first object vanishes for one frame: count and identity break.
    gap = video.copy()
    gap[7] = render_clip(_with_objects(clip, clip.objects[1:]), 16, 32)[7]
    report = evaluate_clips(gap, [prompt])
    assert not report.results[0].checks["identity"] and not report.results[0].checks["count"]
    assert report.breakdown["objects"] == 0.0
    # It shows another colour and another shape for one frame each: flicker.
    other_colour = next(c for c in ("red", "green") if c not in (obj.colour, obj.colour_to))
    recoloured = dataclasses.replace(obj, start=dataclasses.replace(obj.start, colour=other_colour))
    other_shape = "square" if obj.shape == "circle" else "circle"
    reshaped = dataclasses.replace(obj, start=dataclasses.replace(obj.start, shape=other_shape))
    for changed in (recoloured, reshaped):
        flicker = video.copy()
        flicker[9] = render_clip(_with_objects(clip, [changed, *clip.objects[1:]]), 16, 32)[9]
        result = evaluate_clips(flicker, [prompt]).results[0]
        assert not result.checks["flicker"] and not result.satisfied
        assert result.checks["direction"] and result.checks["identity"]


def test_a_prompt_without_motion_accepts_any_motion():
    clip = sample_clip_scenes(1, 5, max_objects=1)[0]
    obj = clip.objects[0]
    report = evaluate_clips(render_clip(clip, 8, 32), [f"a {obj.colour} {obj.shape}"])
    assert report.score == 1.0
