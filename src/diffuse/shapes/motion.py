"""Moving Shapes: clip scenes, their kinematics, the held-out split and the clip renderer.

A clip scene is a Shapes scene (`diffuse.shapes.scenes`) whose one to three objects move. The
first frame is an ordinary image-world scene (same sampler: distinct cells, sizes, backgrounds);
each object then gets a motion:

- a direction: one of the eight compass directions ("right", "up-left", ...) or "still";
- a speed class: "slow" or "fast" (None when still): the distance the box centre travels over
  the clip, SPEED_DISTANCES[speed] times the image side, jittered by +-SPEED_JITTER;
- optionally a growth: "grow" (starts small, ends large) or "shrink" (large to small), the
  box side changing linearly in time;
- optionally a colour change to another palette colour, at the middle of the clip (frames with
  t >= CHANGE_TIME show the new colour; a blend would leave the palette).

Time runs over the clip: frame k of T is at t = k / (T - 1) in [0, 1] (t = 0 when T = 1), so a
clip of 16 frames is the 8-frame clip sampled twice as finely, and the speed classes mean the
same motion at any frame count. Positions move with constant velocity and bounce off the
border: the box centre is reflected between walls BORDER_MARGIN plus half the object's largest
box side from the image edge, so no object ever leaves the frame. A caption names the INITIAL
direction of motion; the sampler makes every first bounce happen at t >= MIN_BOUNCE_TIME, so the
named direction is what the first third of the clip shows. Objects never come closer than
MIN_GAP (box to box) at any time, so the image evaluator sees each one on its own.

Held-out split: 8% of the (colour shape, direction) combinations, chosen by a fixed hash
(`HELDOUT_MOTIONS`, e.g. a "red triangle" moving "down"), never occur in training clips. A
held-out clip has at least one object with a held-out combination, so held-out captions test
composition: the model saw red triangles and things moving down, never the two together.

    clips = sample_clip_scenes(4, seed=0, split="train")
    frames = render_clip(clips[0], frames=16, resolution=64)   # uint8 [16, 64, 64, 3]
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np

from diffuse.shapes.render import render_background, shape_coverages
from diffuse.shapes.scenes import (
    COLOURS,
    SIZE_EXTENTS,
    Background,
    Scene,
    ShapeObject,
    _all_objects,
    _place,
    _sample_background,
    seeded_rng,
)

__all__ = [
    "DIRECTIONS",
    "DIRECTION_VECTORS",
    "SPEEDS",
    "SPEED_DISTANCES",
    "SPEED_JITTER",
    "GROWTHS",
    "GROWTH_RATIO",
    "CHANGE_TIME",
    "BORDER_MARGIN",
    "MIN_GAP",
    "MIN_BOUNCE_TIME",
    "START_CLEARANCE",
    "HELDOUT_MOTION_FRACTION",
    "HELDOUT_MOTIONS",
    "CLIP_SPLITS",
    "MovingObject",
    "ClipScene",
    "frame_times",
    "is_heldout_clip",
    "sample_clip_scene",
    "sample_clip_scenes",
    "render_clip",
]

# Unit direction per motion, in image coordinates (x right, y DOWN): "up" is (0, -1).
_S = 1 / math.sqrt(2)
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-right": (_S, -_S),
    "up-left": (-_S, -_S),
    "down-right": (_S, _S),
    "down-left": (-_S, _S),
    "still": (0.0, 0.0),
}
DIRECTIONS: tuple[str, ...] = tuple(DIRECTION_VECTORS)
SPEEDS: tuple[str, ...] = ("slow", "fast")
# Path length of the box centre over the whole clip, as a fraction of the image side.
SPEED_DISTANCES: dict[str, float] = {"slow": 0.3, "fast": 0.6}
# Each object's distance is its class's times 1 +- SPEED_JITTER (uniform): slow 0.255-0.345,
# fast 0.51-0.69, so the classes stay apart by a factor 1.5.
SPEED_JITTER = 0.15
GROWTHS: tuple[str, ...] = ("grow", "shrink")
# A growing object ends GROWTH_RATIO times as large as it starts: small to large.
GROWTH_RATIO = SIZE_EXTENTS["large"] / SIZE_EXTENTS["small"]
# Fraction of the clip after which a changing object shows its new colour.
CHANGE_TIME = 0.5
# Gap between a box and the image border at a bounce (normalised).
BORDER_MARGIN = 0.01
# Smallest distance between two objects' boxes at any time (normalised; 1.6 px at 32 px).
MIN_GAP = 0.05
# Smallest distance from a start position to a wall (normalised).
START_CLEARANCE = 0.02
# No object bounces before this fraction of the clip, so its initial direction is visible.
MIN_BOUNCE_TIME = 0.35

# Probabilities of a drawn object's motion options.
_P_STILL = 0.2
_P_GROWTH = 0.3  # half grow, half shrink
_P_COLOUR_CHANGE = 0.15
# Times at which the sampler checks gaps and bounces (finer than any clip's frames: at the
# fastest speed an object moves 0.0115 between two checks, so gaps hold to MIN_GAP - 0.023).
_CHECK_TIMES = np.linspace(0.0, 1.0, 61)
_GAP_SLACK = 0.025

HELDOUT_MOTION_FRACTION = 0.08
_HELDOUT_SALT = "diffuse-moving-shapes-heldout-v1"


def _motion_is_heldout(name: str, direction: str) -> bool:
    """Fixed-hash membership of ('colour shape', direction) in the held-out combinations."""
    digest = hashlib.sha256(f"{_HELDOUT_SALT}:{name}:{direction}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < round(HELDOUT_MOTION_FRACTION * 10_000)


# Held-out ('colour shape', direction) combinations, e.g. ('red triangle', 'down').
HELDOUT_MOTIONS: tuple[tuple[str, str], ...] = tuple(
    (f"{c} {s}", d)
    for c, s in _all_objects()
    for d in DIRECTIONS
    if _motion_is_heldout(f"{c} {s}", d)
)
_HELDOUT_MOTION_SET = frozenset(HELDOUT_MOTIONS)

CLIP_SPLITS: tuple[str, ...] = ("train", "heldout")


@dataclass(frozen=True)
class MovingObject:
    """One object of a clip: its first-frame state and its motion.

    Attributes:
        start: the object in the first frame (an image-world object: shape, colour, start size,
            start cell, box centre and side).
        direction: a key of DIRECTION_VECTORS ("still" for no motion).
        speed: "slow" or "fast"; None when still.
        distance: path length of the box centre over the clip (normalised; 0 when still).
        growth: "grow", "shrink" or None.
        colour_to: the colour shown from t >= CHANGE_TIME on, or None.
    """

    start: ShapeObject
    direction: str
    speed: str | None = None
    distance: float = 0.0
    growth: str | None = None
    colour_to: str | None = None

    @property
    def shape(self) -> str:
        return self.start.shape

    @property
    def colour(self) -> str:
        """The colour of the first frame."""
        return self.start.colour

    @property
    def size(self) -> str:
        """The size class of the first frame."""
        return self.start.size

    @property
    def name(self) -> str:
        """'colour shape' of the first frame, e.g. 'blue square'."""
        return self.start.name

    def extents(self, t: np.ndarray) -> np.ndarray:
        """Box side at times t (any shape), linear in t for a growing or shrinking object."""
        ratio = {"grow": GROWTH_RATIO, "shrink": 1 / GROWTH_RATIO}.get(self.growth or "", 1.0)
        return self.start.extent * (1.0 + (ratio - 1.0) * np.asarray(t, np.float64))

    def walls(self) -> tuple[float, float]:
        """(low, high) bounds of the box centre on either axis: half the largest box side plus
        BORDER_MARGIN from the image edge."""
        largest = float(self.extents(np.array([0.0, 1.0])).max())
        low = largest / 2 + BORDER_MARGIN
        return low, 1.0 - low

    def centres(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Box centre (cx, cy) at times t: constant velocity, reflected at the walls."""
        t = np.asarray(t, np.float64)
        dx, dy = DIRECTION_VECTORS[self.direction]
        low, high = self.walls()
        return (
            _reflect(self.start.cx + dx * self.distance * t, low, high),
            _reflect(self.start.cy + dy * self.distance * t, low, high),
        )

    def colours(self, t: np.ndarray) -> list[str]:
        """The colour at each time of t (a 1-D array)."""
        if self.colour_to is None:
            return [self.colour] * len(t)
        return [self.colour_to if ti >= CHANGE_TIME else self.colour for ti in np.asarray(t)]

    def first_bounce(self) -> float:
        """Clip time of the first bounce off a wall (inf when none happens in [0, inf))."""
        low, high = self.walls()
        times = [math.inf]
        dx, dy = DIRECTION_VECTORS[self.direction]
        for position, velocity in ((self.start.cx, dx), (self.start.cy, dy)):
            v = velocity * self.distance
            if v > 1e-12:
                times.append((high - position) / v)
            elif v < -1e-12:
                times.append((position - low) / -v)
        return min(times)


def _reflect(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold positions into [low, high] by mirror reflection at both ends (a bounce)."""
    span = high - low
    u = np.mod(x - low, 2 * span)
    return low + np.where(u <= span, u, 2 * span - u)


def frame_times(frames: int) -> np.ndarray:
    """Clip time of each frame: k / (frames - 1), k = 0 .. frames - 1 ([0] for one frame)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


@dataclass(frozen=True)
class ClipScene:
    """A background and one to three moving objects with distinct (colour, shape) pairs."""

    objects: tuple[MovingObject, ...]
    background: Background

    def at(self, t: float) -> Scene:
        """The image-world scene at clip time t (positions, sizes, colours and cells then)."""
        times = np.array([float(t)])
        objects = []
        for obj in self.objects:
            cx, cy = (float(c[0]) for c in obj.centres(times))
            objects.append(
                replace(
                    obj.start,
                    colour=obj.colours(times)[0],
                    row=min(2, int(cy * 3)),
                    col=min(2, int(cx * 3)),
                    cx=cx,
                    cy=cy,
                    extent=float(obj.extents(times)[0]),
                )
            )
        return Scene(objects=tuple(objects), background=self.background)

    def describe(self) -> str:
        """Canonical description, e.g. 'small red circle @ top left: fast right, grow'."""
        parts = []
        for o in self.objects:
            motion = o.direction if o.speed is None else f"{o.speed} {o.direction}"
            extras = [x for x in (o.growth, o.colour_to and f"to {o.colour_to}") if x]
            parts.append(f"{o.start.size} {o.name} @ {o.start.row},{o.start.col}: " + motion)
            parts[-1] += "".join(f", {x}" for x in extras)
        return "; ".join(sorted(parts))


def is_heldout_clip(clip: ClipScene) -> bool:
    """Whether an object of the clip has a held-out (colour shape, direction) combination."""
    return any((o.name, o.direction) in _HELDOUT_MOTION_SET for o in clip.objects)


@dataclass(frozen=True)
class _Plan:
    """What a clip's object does, drawn before its placement: the sampler redraws only the
    placement when motions collide, so rejection does not favour still or slow objects."""

    colour: str
    shape: str
    direction: str
    speed: str | None
    growth: str | None
    colour_to: str | None


def _draw_plans(
    rng: np.random.Generator, chosen: list[tuple[str, str]], directions: list[str | None]
) -> list[_Plan]:
    """Motion options of (colour, shape) objects (a given direction is kept)."""
    taken = set(chosen)
    plans = []
    for (colour, shape), direction in zip(chosen, directions):
        if direction is None:
            moving = DIRECTIONS[:-1]
            direction = "still" if rng.random() < _P_STILL else moving[int(rng.integers(8))]
        speed = None if direction == "still" else SPEEDS[int(rng.integers(2))]
        growth = GROWTHS[int(rng.integers(2))] if rng.random() < _P_GROWTH else None
        colour_to = None
        if rng.random() < _P_COLOUR_CHANGE:
            free = [c for c in COLOURS if c != colour and (c, shape) not in taken]
            colour_to = free[int(rng.integers(len(free)))]
            taken.add((colour_to, shape))
        plans.append(_Plan(colour, shape, direction, speed, growth, colour_to))
    return plans


def _moving_object(rng: np.random.Generator, start: ShapeObject, plan: _Plan) -> MovingObject:
    """The object placed at `start` doing what `plan` says (speed jitter drawn here)."""
    distance = 0.0
    if plan.speed is not None:
        jitter = rng.uniform(-SPEED_JITTER, SPEED_JITTER)
        distance = SPEED_DISTANCES[plan.speed] * (1.0 + jitter)
    if plan.growth is not None:
        # A growing object starts small and ends large; a shrinking one the other way round.
        size = "small" if plan.growth == "grow" else "large"
        scale = SIZE_EXTENTS[size] / SIZE_EXTENTS[start.size]
        start = replace(start, size=size, extent=start.extent * scale)
    obj = MovingObject(start, plan.direction, plan.speed, distance, plan.growth, plan.colour_to)
    # A growing object's walls are further in: keep its start inside them, START_CLEARANCE
    # away, so no object starts on a wall (where moving in or out of it looks the same). It
    # stays in its cell: the walls are at most 0.15 from the edge, inside the outer cells.
    low, high = obj.walls()
    low, high = low + START_CLEARANCE, high - START_CLEARANCE
    cx, cy = min(max(start.cx, low), high), min(max(start.cy, low), high)
    return replace(obj, start=replace(start, cx=cx, cy=cy))


def _clears(objects: list[MovingObject]) -> bool:
    """Whether every object first bounces late enough and all boxes keep MIN_GAP apart."""
    if any(o.first_bounce() < MIN_BOUNCE_TIME for o in objects):
        return False
    tracks = [(*o.centres(_CHECK_TIMES), o.extents(_CHECK_TIMES)) for o in objects]
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            (xa, ya, ea), (xb, yb, eb) = tracks[i], tracks[j]
            reach = (ea + eb) / 2 + MIN_GAP + _GAP_SLACK
            if np.any((np.abs(xa - xb) < reach) & (np.abs(ya - yb) < reach)):
                return False
    return True


def _draw_plan_and_place(
    rng: np.random.Generator, split: str, max_objects: int
) -> tuple[list[_Plan], Background]:
    """The objects, their motion plans and the background of one clip."""
    everything = _all_objects()
    while True:
        n = int(rng.integers(1, max_objects + 1))
        chosen = [everything[i] for i in rng.choice(len(everything), size=n, replace=False)]
        directions: list[str | None] = [None] * n
        if split == "heldout":
            name, direction = HELDOUT_MOTIONS[int(rng.integers(len(HELDOUT_MOTIONS)))]
            colour, shape = name.split(" ")
            if (colour, shape) in chosen[1:]:
                continue
            chosen[0], directions[0] = (colour, shape), direction
        plans = _draw_plans(rng, chosen, directions)
        named = [((p.colour + " " + p.shape), p.direction) for p in plans]
        heldout = any(m in _HELDOUT_MOTION_SET for m in named)
        if heldout == (split == "heldout"):
            return plans, _sample_background(rng)


def sample_clip_scene(
    seed: int, index: int, split: str = "train", max_objects: int = 3
) -> ClipScene:
    """The clip of item `index` of a split, deterministic from (seed, index, split, max_objects).

    "train": one to `max_objects` objects (uniform), no held-out (colour shape, direction).
    "heldout": the first object has a held-out combination (the others are drawn freely).
    The objects and what they do are drawn first; only their placement (cells, sizes, speed
    jitter) is drawn again while the motions collide or bounce before MIN_BOUNCE_TIME.
    """
    if split not in CLIP_SPLITS:
        raise ValueError(f"split must be one of {', '.join(CLIP_SPLITS)}, got {split!r}")
    if not 1 <= max_objects <= 3:
        raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects}")
    salt = {"train": 0, "heldout": 4_000_037}[split]
    for draw in range(100):
        plans, background = _draw_plan_and_place(
            seeded_rng(seed, index, salt, max_objects, draw), split, max_objects
        )
        chosen = [(p.colour, p.shape) for p in plans]
        for attempt in range(200):
            rng = seeded_rng(seed, index, salt, max_objects, draw, attempt + 1)
            starts = _place(rng, chosen, background).objects
            objects = [_moving_object(rng, o, p) for o, p in zip(starts, plans)]
            if _clears(objects):
                return ClipScene(objects=tuple(objects), background=background)
    raise RuntimeError(f"no {split} clip for seed={seed} index={index}")


def sample_clip_scenes(
    count: int, seed: int, split: str = "train", max_objects: int = 3
) -> list[ClipScene]:
    """Clips 0 .. count - 1 of a split (`sample_clip_scene` each).

    Args:
        count: number of clips.
        seed: selects an independent stream.
        split: "train" or "heldout" (see the module docstring).
        max_objects: at most this many objects per clip (1 to 3).
    Returns:
        The ClipScenes.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [sample_clip_scene(seed, i, split, max_objects) for i in range(count)]


def render_clip(clip: ClipScene, frames: int, resolution: int) -> np.ndarray:
    """Render a clip: the background once, each object's coverage for all frames at once.

    Args:
        clip: the clip scene.
        frames: number of frames T (>= 1); frame k shows clip time k / (T - 1).
        resolution: frame side in pixels (>= 16; 32 and 64 are the dataset sizes).
    Returns:
        uint8 [T, resolution, resolution, 3].
    """
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got {resolution}")
    times = frame_times(frames)
    bg = clip.background
    background = render_background(bg.colour_a, bg.colour_b, bg.angle, resolution)
    video = np.repeat(background[None], len(times), axis=0)  # [T, R, R, 3] float32
    for obj in clip.objects:
        # Coverage of the object in every frame at once; compositing is a slice per frame.
        alpha, tops, lefts = shape_coverages(
            obj.shape, *obj.centres(times), obj.extents(times), resolution
        )
        h, w = alpha.shape[1:]
        for k, colour in enumerate(obj.colours(times)):
            window = video[k, tops[k] : tops[k] + h, lefts[k] : lefts[k] + w]  # cropped view
            cover = alpha[k, : window.shape[0], : window.shape[1], None]
            window += cover * (np.asarray(COLOURS[colour], np.float32) - window)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)
