"""Shapes rasteriser: exact coverage, antialiasing, backgrounds, resolution consistency."""

import math

import numpy as np
import pytest

from diffuse.shapes.render import (
    SHAPE_VERTICES,
    TRIANGLE_HEIGHT,
    render_background,
    render_scene,
    render_scenes,
    shape_coverage,
)
from diffuse.shapes.scenes import COLOURS, Background, Scene, ShapeObject, sample_scene


def _polygon_area(verts: np.ndarray) -> float:
    x, y = verts[:, 0], verts[:, 1]
    return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "star"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_coverage_integrates_to_the_exact_area(shape, resolution):
    extent = 0.26
    alpha, top, left = shape_coverage(shape, 0.43, 0.57, extent, resolution)
    unit_area = math.pi / 4 if shape == "circle" else _polygon_area(SHAPE_VERTICES[shape])
    area = alpha.sum() / resolution**2
    # Supersampling places each edge to 1/k px (k = 8 at 32 px, 4 at 64 px).
    assert area == pytest.approx(unit_area * extent**2, rel=0.03)
    assert alpha.min() >= 0 and alpha.max() <= 1
    partial = ((alpha > 0) & (alpha < 1)).sum()
    assert partial > 0  # antialiased edge


def test_shapes_fill_their_bounding_box():
    """The larger side of every shape's box equals its extent."""
    for shape in ("circle", "square", "triangle", "star"):
        alpha, _, _ = shape_coverage(shape, 0.5, 0.5, 0.5, 256)
        rows, cols = np.nonzero(alpha > 0.5)
        side = max(np.ptp(rows), np.ptp(cols)) + 1
        assert side == pytest.approx(128, abs=2), shape
    alpha, _, _ = shape_coverage("triangle", 0.5, 0.5, 0.5, 256)
    rows, cols = np.nonzero(alpha > 0.5)
    assert (np.ptp(rows) + 1) / (np.ptp(cols) + 1) == pytest.approx(TRIANGLE_HEIGHT, abs=0.02)


def test_background_gradient_and_flat_tint():
    flat = render_background((10, 20, 30), (10, 20, 30), 1.0, 32)
    assert np.allclose(flat, np.array([10, 20, 30], np.float32))
    ramp = render_background((0, 0, 0), (90, 90, 90), 0.0, 32)  # left -> right
    assert ramp[0, 0, 0] < 5 and ramp[0, -1, 0] > 85
    assert np.all(np.diff(ramp[0, :, 0]) >= 0)
    assert np.allclose(ramp[0], ramp[-1])  # constant along the perpendicular


def test_render_scene_draws_each_object_in_its_colour_and_cell():
    objs = (
        ShapeObject("square", "red", "large", 0, 0, 1 / 6, 1 / 6, 0.26),
        ShapeObject("circle", "blue", "small", 2, 2, 5 / 6, 5 / 6, 0.17),
    )
    scene = Scene(objects=objs, background=Background((24, 24, 28), (24, 24, 28), 0.0))
    image = render_scene(scene, 64)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert tuple(image[10, 10]) == COLOURS["red"]
    assert tuple(image[53, 53]) == COLOURS["blue"]
    assert tuple(image[32, 32]) == (24, 24, 28)


def test_render_is_deterministic_and_consistent_across_resolutions():
    scenes = [sample_scene(0, i) for i in range(20)]
    a = render_scenes(scenes, 32)
    assert np.array_equal(a, render_scenes(scenes, 32))
    big = render_scenes(scenes, 64).astype(float)
    down = big.reshape(20, 32, 2, 32, 2, 3).mean(axis=(2, 4))  # 2x2 box filter
    diff = np.abs(down - a.astype(float))
    assert diff.mean() < 0.5 and diff.max() < 12


def test_render_rejects_bad_arguments():
    with pytest.raises(ValueError, match="hexagon"):
        shape_coverage("hexagon", 0.5, 0.5, 0.2, 32)
    with pytest.raises(ValueError, match="8"):
        render_scene(sample_scene(0, 0), 8)
