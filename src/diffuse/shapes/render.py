"""Rasterise Shapes scenes with antialiasing.

Geometry lives in normalised image coordinates: x to the right, y downwards, both in [0, 1],
so one scene renders identically (up to resolution) at 32 and 64 px. Coverage is computed by
supersampling each pixel on a k x k grid (k chosen so the supersampled canvas is >= 256 px wide)
and box-averaging, which places every edge to within 1/k px (area within ~2% for a 5 px object).
Objects are composited over the background with that coverage as alpha.

Every shape is specified by its bounding box: `size` is the larger side of the box and
(cx, cy) its centre, so "small"/"large" mean the same extent for every shape and the position
of an object is the centre of its box.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from diffuse.shapes.scenes import COLOURS

if TYPE_CHECKING:
    from diffuse.shapes.scenes import Scene

__all__ = [
    "SHAPE_VERTICES",
    "STAR_INNER_RATIO",
    "TRIANGLE_HEIGHT",
    "shape_coverage",
    "shape_coverages",
    "render_background",
    "draw_shape",
    "render_scene",
    "render_scenes",
]

# Height of the (isosceles, apex-up) triangle relative to its base: an equilateral triangle.
TRIANGLE_HEIGHT = math.sqrt(3.0) / 2.0
# Inner / outer radius of the five-pointed star. 0.382 is the regular pentagram; a chunkier
# 0.45 keeps the arms legible at 5 px.
STAR_INNER_RATIO = 0.45


def _star_vertices() -> np.ndarray:
    """Ten vertices of an apex-up five-pointed star, scaled so its bounding box has max side 1
    and centred on its bounding box. Returns [10, 2] (x, y)."""
    angles = -math.pi / 2 + np.arange(10) * math.pi / 5  # first point straight up
    radii = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER_RATIO)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    lo, hi = pts.min(0), pts.max(0)
    pts = (pts - (lo + hi) / 2) / (hi - lo).max()
    return pts


def _unit_polygons() -> dict[str, np.ndarray]:
    """Polygons in a unit bounding box centred at the origin (max side = 1)."""
    h = TRIANGLE_HEIGHT
    return {
        "square": np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]),
        "triangle": np.array([[0.0, -h / 2], [0.5, h / 2], [-0.5, h / 2]]),
        "star": _star_vertices(),
    }


# Unit polygons of the polygonal shapes (the circle is analytic).
SHAPE_VERTICES: dict[str, np.ndarray] = _unit_polygons()


def _edges(verts: np.ndarray) -> tuple[tuple[float, float, float, float], ...]:
    """Non-horizontal edges (ax, ay, bx, by) of a closed polygon [V, 2]."""
    following = np.roll(verts, -1, axis=0)
    return tuple(
        (float(ax), float(ay), float(bx), float(by))
        for (ax, ay), (bx, by) in zip(verts, following)
        if ay != by  # a horizontal edge never crosses a horizontal ray
    )


_EDGES = {name: _edges(verts) for name, verts in SHAPE_VERTICES.items()}


def _inside_polygon(
    x: np.ndarray, y: np.ndarray, edges: tuple[tuple[float, float, float, float], ...]
) -> np.ndarray:
    """Even-odd (crossing number) point-in-polygon test, vectorised over points.

    Args:
        x, y: point coordinates, any (same) shape.
        edges: the polygon's non-horizontal edges (ax, ay, bx, by).

    Returns:
        bool array of the shape of x.
    """
    inside = np.zeros(x.shape, dtype=bool)
    for ax, ay, bx, by in edges:
        crosses = (ay > y) != (by > y)
        x_at = ax + (y - ay) * ((bx - ax) / (by - ay))
        inside ^= crosses & (x < x_at)
    return inside


def _inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Membership of points (in unit-box coordinates, centred at 0) in a unit shape."""
    if shape == "circle":
        return x * x + y * y <= 0.25
    if shape == "square":
        return (np.abs(x) <= 0.5) & (np.abs(y) <= 0.5)
    if shape not in _EDGES:
        raise ValueError(f"unknown shape {shape!r}; valid: circle, {', '.join(SHAPE_VERTICES)}")
    return _inside_polygon(x, y, _EDGES[shape])


def _supersampling(resolution: int) -> int:
    """Samples per pixel side so the supersampled canvas is at least 256 px wide (>= 4)."""
    return max(4, -(-256 // resolution))


def shape_coverage(
    shape: str, cx: float, cy: float, size: float, resolution: int
) -> tuple[np.ndarray, int, int]:
    """Antialiased coverage of one shape on a `resolution` x `resolution` pixel grid.

    Only the window of pixels that the bounding box touches is computed.

    Args:
        shape: "circle", "square", "triangle" or "star".
        cx, cy: centre of the bounding box, normalised coordinates.
        size: larger side of the bounding box, normalised.
        resolution: image side in pixels.

    Returns:
        (alpha, top, left): alpha [h, w] float32 in [0, 1] for the window whose top-left pixel
        is (top, left).
    """
    alpha, top, left = shape_coverages(shape, [cx], [cy], [size], resolution)
    return alpha[0], int(top[0]), int(left[0])


def shape_coverages(
    shape: str,
    cx: Sequence[float] | np.ndarray,
    cy: Sequence[float] | np.ndarray,
    size: Sequence[float] | np.ndarray,
    resolution: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`shape_coverage` of one shape at N placements at once (the frames of a clip).

    Every window has the size of the largest one; a window that is larger than its own
    placement's covers zero there, and may reach past the image's right or bottom edge (crop
    it to the image).

    Args:
        shape: the shape name.
        cx, cy, size: [N] box centres and larger sides, normalised.
        resolution: image side in pixels.

    Returns:
        (alpha [N, h, w] float32 in [0, 1], top [N], left [N]) pixel offsets of each window.
    """
    cx, cy, size = (np.asarray(v, np.float64).reshape(-1) for v in (cx, cy, size))
    n, k = cx.size, _supersampling(resolution)
    half = size / 2
    left = np.maximum(0, np.floor((cx - half) * resolution)).astype(np.int64)
    right = np.minimum(resolution, np.ceil((cx + half) * resolution)).astype(np.int64)
    top = np.maximum(0, np.floor((cy - half) * resolution)).astype(np.int64)
    bottom = np.minimum(resolution, np.ceil((cy + half) * resolution)).astype(np.int64)
    h, w = int((bottom - top).max(initial=0)), int((right - left).max(initial=0))
    if h <= 0 or w <= 0:
        return np.zeros((n, 0, 0), np.float32), top, left
    offsets = (np.arange(k) + 0.5) / k  # sub-pixel sample positions
    xs = (left[:, None, None] + np.arange(w)[None, :, None] + offsets).reshape(n, -1) / resolution
    ys = (top[:, None, None] + np.arange(h)[None, :, None] + offsets).reshape(n, -1) / resolution
    scale = size[:, None, None]
    gx = (xs[:, None, :] - cx[:, None, None]) / scale  # [N, 1, w*k] unit-box coordinates
    gy = (ys[:, :, None] - cy[:, None, None]) / scale  # [N, h*k, 1]
    gx, gy = np.broadcast_arrays(gx, gy)  # [N, h*k, w*k]
    hits = _inside(shape, gx, gy).astype(np.float32)
    alpha = hits.reshape(n, h, k, w, k).mean(axis=(2, 4))  # box filter back to pixels
    return alpha, top, left


@functools.lru_cache(maxsize=8)
def _centred_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5], (x, y) each [resolution, resolution]."""
    coords = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution - 0.5
    gx, gy = np.meshgrid(coords, coords)
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def render_background(
    colour_a: Sequence[float], colour_b: Sequence[float], angle: float, resolution: int
) -> np.ndarray:
    """Linear gradient from `colour_a` to `colour_b` along direction `angle` (radians).

    Returns:
        [resolution, resolution, 3] float32 in [0, 255].
    """
    gx, gy = _centred_grid(resolution)
    # Projection onto the direction, mapped so the image's extreme corners span about [0, 1].
    t = (gx * math.cos(angle) + gy * math.sin(angle)) / (
        abs(math.cos(angle)) + abs(math.sin(angle))
    )
    t = np.clip(t + 0.5, 0.0, 1.0)[..., None]
    a = np.asarray(colour_a, np.float64)
    b = np.asarray(colour_b, np.float64)
    return (a + t * (b - a)).astype(np.float32)


def render_scene(scene: Scene, resolution: int = 32) -> np.ndarray:
    """Render a scene to an RGB image.

    Args:
        scene: the scene (background and objects, normalised geometry).
        resolution: image side in pixels (32 and 64 are the supported dataset sizes; any
            side >= 16 renders).

    Returns:
        [resolution, resolution, 3] uint8 image (HWC).
    """

    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got {resolution}")
    bg = scene.background
    image = render_background(bg.colour_a, bg.colour_b, bg.angle, resolution)
    for obj in scene.objects:
        draw_shape(image, obj.shape, obj.colour, obj.cx, obj.cy, obj.extent)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def draw_shape(
    canvas: np.ndarray, shape: str, colour: str, cx: float, cy: float, size: float
) -> None:
    """Composite one antialiased shape over `canvas` in place ("over", coverage as alpha).

    Args:
        canvas: [R, R, 3] float32 in [0, 255] (a square image of side R).
        shape, colour: a shape name and a key of COLOURS.
        cx, cy, size: bounding-box centre and larger side, normalised.
    """
    alpha, top, left = shape_coverage(shape, cx, cy, size, canvas.shape[0])
    h, w = alpha.shape
    rgb = np.asarray(COLOURS[colour], np.float32)
    window = canvas[top : top + h, left : left + w]  # [h, w, 3] view
    window += alpha[..., None] * (rgb - window)


def render_scenes(scenes: Sequence[Scene], resolution: int = 32) -> np.ndarray:
    """Render several scenes. Returns [N, resolution, resolution, 3] uint8."""
    return np.stack([render_scene(s, resolution) for s in scenes])
