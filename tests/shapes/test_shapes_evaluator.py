"""Prompt-adherence evaluator: parsing, ground-truth validation, rejection of wrong images."""

import dataclasses

import numpy as np
import pytest
import torch

from diffuse.shapes.evaluator import (
    _SIGNATURES,
    ObjectSpec,
    PromptSpec,
    Relation,
    detect_objects,
    evaluate,
    parse_prompt,
    score_detections,
)
from diffuse.shapes.render import render_scene, render_scenes, shape_coverage
from diffuse.shapes.scenes import (
    CELL_NAMES,
    COLOURS,
    SHAPES,
    SIZE_EXTENTS,
    caption,
    paraphrase,
    sample_split_scene,
)
from diffuse.shapes.validate import _degrade

N_VALIDATION = 1000


@pytest.fixture(scope="module")
def heldout():
    """1,000 held-out scenes with their training captions and paraphrases."""
    scenes = [sample_split_scene(0, i, "heldout") for i in range(N_VALIDATION)]
    captions = [caption(s, 0, i) for i, s in enumerate(scenes)]
    paraphrases = [paraphrase(s, 0, i) for i, s in enumerate(scenes)]
    return scenes, captions, paraphrases


@pytest.fixture(scope="module", params=[32, 64])
def renders(request, heldout):
    """(size, uint8 renders, their detections)."""
    images = render_scenes(heldout[0], request.param)
    return request.param, images, detect_objects(images)


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "a large blue square to the right of a small green triangle",
            PromptSpec(
                (
                    ObjectSpec("square", "blue", "large"),
                    ObjectSpec("triangle", "green", "small"),
                ),
                (Relation(0, "right", 1),),
            ),
        ),
        ("a red circle in the top left", PromptSpec((ObjectSpec("circle", "red", None, (0, 0)),))),
        (
            "A crimson disc in the upper-left corner.",
            PromptSpec((ObjectSpec("circle", "red", None, (0, 0)),)),
        ),
        (
            "In the top right, a yellow star",
            PromptSpec((ObjectSpec("star", "yellow", None, (0, 2)),)),
        ),
        (
            "A white star on a dark background, at the bottom.",
            PromptSpec((ObjectSpec("star", "white", None, (2, 1)),)),
        ),
        (
            "Above a green triangle there is a blue square",
            PromptSpec(
                (ObjectSpec("triangle", "green"), ObjectSpec("square", "blue")),
                (Relation(1, "above", 0),),
            ),
        ),
        (
            "a red circle above and to the left of a blue square",
            PromptSpec(
                (ObjectSpec("circle", "red"), ObjectSpec("square", "blue")),
                (Relation(0, "above", 1), Relation(0, "left", 1)),
            ),
        ),
        (
            "a red circle in the top left; a blue square below the red circle",
            PromptSpec(
                (ObjectSpec("circle", "red", None, (0, 0)), ObjectSpec("square", "blue")),
                (Relation(1, "below", 0),),
            ),
        ),
        (
            "three shapes: a red circle at the top, a cyan square in the middle left, and "
            "an orange star in the bottom right corner",
            PromptSpec(
                (
                    ObjectSpec("circle", "red", None, (0, 1)),
                    ObjectSpec("square", "cyan", None, (1, 0)),
                    ObjectSpec("star", "orange", None, (2, 2)),
                ),
                count=3,
            ),
        ),
        (
            "a huge azure block lies beneath a tiny scarlet pentagram, plus a violet wedge "
            "toward the south-east",
            PromptSpec(
                (
                    ObjectSpec("square", "blue", "large"),
                    ObjectSpec("star", "red", "small"),
                    ObjectSpec("triangle", "purple", None, (2, 2)),
                ),
                (Relation(0, "below", 1),),
            ),
        ),
        ("a photo of a cat", PromptSpec(())),
    ],
)
def test_parse_prompt(prompt, expected):
    assert parse_prompt(prompt) == expected


# -- detection -------------------------------------------------------------------------------


def test_harmonic_signatures_match_the_rendered_shapes():
    """F_m = |E[z^m]| / A^(m/2) of each shape, measured on a large render."""
    for order, shape in ((3, "triangle"), (4, "square"), (5, "star")):
        alpha, _, _ = shape_coverage(shape, 0.5, 0.5, 0.9, 256)
        ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]] + 0.5
        mass = alpha.sum()
        z = xs - (alpha * xs).sum() / mass + 1j * (ys - (alpha * ys).sum() / mass)
        value = abs((alpha * z**order).sum() / mass) / mass ** (order / 2)
        assert value == pytest.approx(_SIGNATURES[order], rel=0.02), shape


def test_detections_recover_the_scene(heldout, renders):
    _, _, detections = renders
    for scene, dets in zip(heldout[0], detections):
        found = sorted((d.shape, d.colour, d.size, d.cell) for d in dets)
        truth = sorted((o.shape, o.colour, o.size, (o.row, o.col)) for o in scene.objects)
        assert found == truth


# -- validation on ground truth --------------------------------------------------------------


def test_ground_truth_renders_of_heldout_prompts_are_satisfied(heldout, renders):
    """The acceptance bar: >= 99% of 1,000 held-out prompts, at 32 and 64 px."""
    size, images, detections = renders
    reports = [evaluate(images[:100], heldout[1][:100])]  # the end-to-end entry point
    reports += [score_detections(detections, prompts) for prompts in heldout[1:]]
    for report in reports:
        assert report.score >= 0.99, (size, report.summary())
        assert min(report.breakdown.values()) >= 0.99
    assert reports[1].n == reports[2].n == N_VALIDATION


def test_mismatched_pairs_are_rejected(heldout, renders):
    _, _, detections = renders
    for prompts in heldout[1:]:
        shifted = prompts[1:] + prompts[:1]  # image i with the prompt of image i + 1
        assert score_detections(detections, shifted).score < 0.1


def _full_caption(objects) -> str:
    """A caption naming every attribute of every object."""
    return ", ".join(
        f"a {o.size} {o.colour} {o.shape} in the {CELL_NAMES[(o.row, o.col)]}" for o in objects
    )


def _perturb(scene, attribute: str, rng: np.random.Generator):
    """The scene with one attribute of one object changed to another valid value."""
    objs = list(scene.objects)
    k = int(rng.integers(len(objs)))
    o = objs[k]
    taken = {(p.colour, p.shape) for p in objs}
    if attribute == "shape":
        options = [s for s in SHAPES if (o.colour, s) not in taken]
        o = dataclasses.replace(o, shape=options[int(rng.integers(len(options)))])
    elif attribute == "colour":
        options = [c for c in COLOURS if (c, o.shape) not in taken]
        o = dataclasses.replace(o, colour=options[int(rng.integers(len(options)))])
    elif attribute == "size":
        size = "small" if o.size == "large" else "large"
        o = dataclasses.replace(  # recentred so the new size stays inside the cell
            o, size=size, extent=SIZE_EXTENTS[size], cx=(o.col + 0.5) / 3, cy=(o.row + 0.5) / 3
        )
    else:  # position: move to a free cell
        free = [c for c in range(9) if c not in {p.row * 3 + p.col for p in objs}]
        row, col = divmod(free[int(rng.integers(len(free)))], 3)
        o = dataclasses.replace(o, row=row, col=col, cx=(col + 0.5) / 3, cy=(row + 0.5) / 3)
    objs[k] = o
    return dataclasses.replace(scene, objects=tuple(objs))


@pytest.mark.parametrize("attribute", ["shape", "colour", "size", "position"])
def test_near_misses_fail_on_the_changed_attribute(heldout, attribute):
    """Changing one attribute of one object makes the prompt fail, on that attribute."""
    rng = np.random.default_rng(0)
    scenes = heldout[0][:100]
    prompts = [_full_caption(s.objects) for s in scenes]
    wrong = [_perturb(s, attribute, rng) for s in scenes]
    for size in (32, 64):
        report = evaluate(render_scenes(wrong, size), prompts)
        assert report.score == 0.0, size
        assert report.breakdown[attribute] == 0.0, size


def test_extra_or_missing_objects_fail_the_count(heldout):
    scenes = [s for s in heldout[0][:300] if len(s.objects) == 3][:50]
    fewer = [dataclasses.replace(s, objects=s.objects[:2]) for s in scenes]
    report = evaluate(render_scenes(fewer, 32), [_full_caption(s.objects) for s in scenes])
    assert report.score == 0.0 and report.breakdown["count"] == 0.0
    report = evaluate(render_scenes(scenes, 32), [_full_caption(s.objects[:2]) for s in scenes])
    assert report.score == 0.0 and report.breakdown["count"] == 0.0


def test_mild_noise_and_blur_are_tolerated(heldout):
    scenes, prompts = heldout[0][:200], heldout[1][:200]
    for size in (32, 64):
        images = render_scenes(scenes, size)
        assert evaluate(_degrade(images, 0, 8.0, seed=0), prompts).score >= 0.97
    images = render_scenes(scenes, 64)
    assert evaluate(_degrade(images, 1, 0.0, seed=0), prompts).score >= 0.97


# -- inputs ----------------------------------------------------------------------------------


def test_input_layouts_agree(heldout):
    scenes, prompts = heldout[0][:40], heldout[1][:40]
    images = render_scenes(scenes, 32)  # uint8 NHWC
    floats = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    reference = [r.satisfied for r in evaluate(images, prompts).results]
    assert all(reference)
    for variant in (floats, floats.numpy(), list(floats), list(images), torch.from_numpy(images)):
        assert [r.satisfied for r in evaluate(variant, prompts).results] == reference
    single = evaluate(render_scene(scenes[0], 64), prompts[:1])  # one HWC image, other size
    assert single.score == 1.0


def test_blank_image_and_unknown_prompt():
    blank = np.full((1, 32, 32, 3), 30, np.uint8)
    assert detect_objects(blank) == [[]]
    report = evaluate(blank, ["a red circle in the center"])
    assert report.score == 0.0 and report.breakdown["count"] == 0.0
    report = evaluate(blank, ["a photo of a cat"])
    assert report.score == 0.0


def test_evaluate_checks_lengths_and_layouts():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        evaluate(images, ["a red circle"])
    with pytest.raises(ValueError, match="CHW"):
        evaluate(np.zeros((2, 32, 32, 3), np.float32), ["a", "b"])
