"""Prompt adherence for Moving Shapes clips, by classical image analysis (no learned model).

`evaluate_clips(clips, prompts)` parses every clip caption into the objects it requires (shape,
colour, size, start cell, direction, speed class, growth, colour change), detects the objects
in every frame with the image evaluator's detector (`evaluator.detect_objects`), links the
detections of consecutive frames into tracks, fits a bouncing constant-velocity motion to each
track, matches tracks to the caption's objects and reports the fraction of clips fully
satisfied with a per-attribute breakdown. Steps:

1. Tracking: frame 0's detections open tracks; each later frame's detections are assigned to
   the tracks (at most one each) by the smallest total distance to the tracks' predicted
   positions (last position plus last step), within MAX_STEP; a detection no track takes opens
   a new track. Identity is kept when every required object is one track through all frames.
2. Motion fit, per track and axis: the box centre (the centroid corrected by the detected
   shape's centroid offset) is fitted by x(t) = reflect(x0 + v t) between the walls the
   world uses (half the largest detected box side plus motion.BORDER_MARGIN from the border),
   minimising the absolute error over a grid of x0 and v. Reflection makes the fit
   bounce-aware; the absolute error makes it robust to a frame of bad detections. The fitted
   (vx, vy) gives the INITIAL direction (the nearest of the eight compass directions, or
   "still" below STILL_DISTANCE per clip) and the speed class (path length against the
   geometric mean of the slow and fast distances). A fit whose mean error exceeds
   MAX_FIT_ERROR is not a constant-velocity motion and fails the direction check (a shuffled
   clip does).
3. Growth: the ratio of the fitted box side at the end and the start of the clip (a line fitted
   to the detected sides): "grow" above GROWTH_THRESHOLD, "shrink" below its inverse.
4. Checks per clip, each over every frame: shape (every frame), colour (every frame; with a
   colour change the first frame shows the old colour, the last the new one, with exactly one
   switch), size (every frame; the first only for a growing or shrinking object), position
   (the start cell; every frame for a still object), count (the number of detections in every
   frame), direction, speed, growth (as captioned, none when the caption names none), identity
   (each object one complete track, no extra tracks) and flicker (no track changes shape, and
   none switches colour more often than its caption says). The assignment of tracks to objects
   maximises the number of satisfied checks, as the image evaluator's does, with shape and
   colour counted twice so that appearance decides which track is which object.

On ground-truth renders (both splits, captions and paraphrases, 8 and 16 frames, 32 and 64 px)
every clip is fully satisfied, and a clip paired with another clip's caption almost never is
(`python benchmarks/moving_shapes.py`, tests/shapes/test_video_evaluator.py). Played backwards, a
clip with an object that never bounces fails its direction; with its frames shuffled, every
moving object fails it.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffuse.shapes.clip_captions import CLIP_PARAPHRASE_VOCABULARY, CLIP_TRAIN_VOCABULARY
from diffuse.shapes.evaluator import Detection, detect_objects
from diffuse.shapes.motion import (
    BORDER_MARGIN,
    DIRECTION_VECTORS,
    GROWTH_RATIO,
    SPEED_DISTANCES,
    frame_times,
)
from diffuse.shapes.render import SHAPE_VERTICES
from diffuse.shapes.scenes import POSITION_WORDS

__all__ = [
    "CLIP_ATTRIBUTES",
    "OBJECT_ATTRIBUTES",
    "REPORTED_RATES",
    "ClipObjectSpec",
    "ClipPromptSpec",
    "Track",
    "MotionFit",
    "ClipResult",
    "ClipAdherenceReport",
    "parse_clip_prompt",
    "track_objects",
    "fit_motion",
    "detect_clip_objects",
    "check_clip_prompt",
    "score_clip_detections",
    "evaluate_clips",
]

logger = logging.getLogger(__name__)

CLIP_ATTRIBUTES: tuple[str, ...] = (
    "shape",
    "colour",
    "size",
    "position",
    "count",
    "direction",
    "speed",
    "growth",
    "identity",
    "flicker",
)
# The object checks (every frame), reported together as "objects" too: the rate of clips with
# every object and attribute right in every frame.
OBJECT_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position", "count")
# Rates a report gives: every check, and the composite "objects".
REPORTED_RATES: tuple[str, ...] = (*CLIP_ATTRIBUTES, "objects")
# Detections per frame that tracking follows (the largest; a clip has at most three objects,
# and the assignment search grows factorially with this number).
MAX_TRACKED = 4
# Largest step (normalised) a track may take between two frames.
MAX_STEP = 0.3
# Path length per clip below which an object counts as still (slow is >= 0.255).
STILL_DISTANCE = 0.1
# Path length per clip separating slow from fast (nominal 0.3 and 0.6).
SPEED_THRESHOLD = math.sqrt(SPEED_DISTANCES["slow"] * SPEED_DISTANCES["fast"])
# Mean absolute error (normalised) of a trajectory fit above which the motion is not one
# constant velocity (1 px at 32 px).
MAX_FIT_ERROR = 1 / 32
# End / start box-side ratio above which an object grows (a grown object has GROWTH_RATIO).
GROWTH_THRESHOLD = math.sqrt(GROWTH_RATIO)
# Weights of the checks when tracks are matched to a prompt's objects: what an object looks
# like decides which track it is before how it moves is judged (two squares passing each other
# backwards are not read as each other).
_WEIGHTS = {"shape": 2, "colour": 2}
# Grids of the motion fit: velocities per clip and start offsets from the first detection.
_VELOCITIES = np.linspace(-1.0, 1.0, 401)
_OFFSETS = np.linspace(-0.04, 0.04, 17)


# --------------------------------------------------------------------------------------------
# Prompt parsing


@dataclass(frozen=True)
class ClipObjectSpec:
    """One object a clip prompt asks for; None = the prompt does not say.

    Attributes:
        shape, colour, size: as in the first frame.
        cell: start cell (row, col); for a still object, its cell throughout.
        direction: a key of motion.DIRECTION_VECTORS ("still" included).
        speed: "slow" or "fast".
        growth: "grow", "shrink" or None (None: the size stays).
        colour_to: the colour it changes to, or None (the colour stays).
    """

    shape: str | None
    colour: str | None
    size: str | None = None
    cell: tuple[int, int] | None = None
    direction: str | None = None
    speed: str | None = None
    growth: str | None = None
    colour_to: str | None = None


@dataclass(frozen=True)
class ClipPromptSpec:
    """Everything a clip prompt requires: its objects, in order of mention."""

    objects: tuple[ClipObjectSpec, ...]


def _phrase_table() -> tuple[dict[str, tuple[str, Any]], list[tuple[tuple[str, ...], tuple]]]:
    """Single words and multi-word phrases of both clip vocabularies, with their meanings."""
    words: dict[str, tuple[str, Any]] = {}
    phrases: list[tuple[tuple[str, ...], tuple[str, Any]]] = []

    def add(text: str, meaning: tuple[str, Any]) -> None:
        key = tuple(re.findall(r"[a-z]+", text.lower()))
        key = key[1:] if key[0] in ("and", "while") else key  # "and grows" -> "grows"
        if len(key) == 1:
            words[key[0]] = meaning
        else:
            phrases.append((key, meaning))

    for vocab in (CLIP_TRAIN_VOCABULARY, CLIP_PARAPHRASE_VOCABULARY):
        objects = vocab.objects
        for kind, table in (
            ("colour", objects.colours),
            ("shape", objects.shapes),
            ("size", objects.sizes),
        ):
            for canonical, options in table.items():
                for option in options:
                    add(option, (kind, canonical))
        for direction, options in vocab.directions.items():
            for option in options:
                add(option, ("direction", direction))
        for option in vocab.stays:
            add(option, ("direction", "still"))
        for speed, options in vocab.speeds.items():
            for option in options:
                add(option, ("speed", speed))
        for growth, options in vocab.growths.items():
            for option in options:
                add(option, ("growth", growth))
        for option in vocab.changes:
            add(option.replace("{c}", ""), ("change", None))
    for word, cell in POSITION_WORDS.items():
        words.setdefault(word, ("posw", cell))
    phrases.sort(key=lambda item: -len(item[0]))  # longest first
    return words, phrases


_WORDS, _PHRASES = _phrase_table()
# Words that may sit inside a position phrase without ending it ("top left corner").
_POSITION_FILLERS = frozenset({"corner", "side", "edge", "of", "frame", "spot", "the"})


def _tokens(prompt: str) -> list[tuple[str, Any]]:
    """Lex a prompt into (kind, value) tokens, longest phrase first."""
    words = re.findall(r"[a-z]+", prompt.lower())
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(words):
        for phrase, meaning in _PHRASES:
            if tuple(words[i : i + len(phrase)]) == phrase:
                out.append(meaning)
                i += len(phrase)
                break
        else:
            out.append(_WORDS.get(words[i], ("other", words[i])))
            i += 1
    return out


def parse_clip_prompt(prompt: str) -> ClipPromptSpec:
    """Parse a Moving Shapes caption (training or paraphrase vocabulary) into its requirements.

    "[a] [size] [colour] shape" names an object; every direction, speed, growth, colour change
    ("turns blue") and position phrase after it belongs to it, until the next object is named.
    A position phrase before the first object belongs to the first object. Unknown words are
    ignored, so a prompt with no motion words asks for objects with any motion.

    Args:
        prompt: the caption.
    Returns:
        The ClipPromptSpec.
    """
    objects: list[dict[str, Any]] = []
    mods: dict[str, Any] = {}
    changing = False  # the last token was "turns": the next colour is the new colour
    pending_cell: tuple[int, int] | None = None
    tokens = _tokens(prompt)
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "colour" and changing and objects:
            objects[-1]["colour_to"] = value
            changing = False
        elif kind in ("size", "colour"):
            mods[kind] = value
        elif kind == "shape":
            objects.append(
                {
                    "shape": value,
                    "colour": mods.get("colour"),
                    "size": mods.get("size"),
                    "cell": pending_cell,
                }
            )
            mods, pending_cell = {}, None
        elif kind == "posw":
            row = col = None
            while i < len(tokens) and (
                tokens[i][0] == "posw"
                or (tokens[i][0] == "other" and tokens[i][1] in _POSITION_FILLERS)
            ):
                if tokens[i][0] == "posw":
                    r, c = tokens[i][1]
                    row = r if row is None else row
                    col = c if col is None else col
                i += 1
            cell = (1 if row is None else row, 1 if col is None else col)
            if objects:
                objects[-1]["cell"] = cell
            else:
                pending_cell = cell
            continue
        elif kind in ("direction", "speed", "growth") and objects:
            objects[-1][kind] = value
        elif kind == "change":
            changing = True
            i += 1
            continue
        if kind != "other":
            changing = False
        i += 1
    return ClipPromptSpec(objects=tuple(ClipObjectSpec(**o) for o in objects))


# --------------------------------------------------------------------------------------------
# Tracking and motion


@dataclass(frozen=True)
class Track:
    """One object followed through a clip: its detection in each frame (None where missing)."""

    detections: tuple[Detection | None, ...]

    @property
    def complete(self) -> bool:
        """Present in every frame."""
        return all(d is not None for d in self.detections)


def track_objects(frames: Sequence[Sequence[Detection]]) -> list[Track]:
    """Link per-frame detections into tracks (see the module docstring, step 1).

    Args:
        frames: per frame, its detections.
    Returns:
        The tracks, those opened in frame 0 first.
    """
    tracks: list[list[Detection | None]] = []
    for k, dets in enumerate(frames):
        dets = sorted(dets, key=lambda d: -d.area)[:MAX_TRACKED]
        live = [j for j, tr in enumerate(tracks) if tr[-1] is not None]
        predicted = []
        for j in live:
            last = tracks[j][-1]
            assert last is not None
            before = tracks[j][-2] if len(tracks[j]) >= 2 else None
            step = (0.0, 0.0) if before is None else (last.cx - before.cx, last.cy - before.cy)
            predicted.append((last.cx + step[0], last.cy + step[1]))
        best: tuple[float, tuple[int | None, ...]] = (math.inf, ())
        options: list[int | None] = [*range(len(dets)), *([None] * len(live))]
        for choice in dict.fromkeys(itertools.permutations(options, len(live))):
            cost = 0.0
            for (px, py), d in zip(predicted, choice):
                dist = MAX_STEP if d is None else math.hypot(dets[d].cx - px, dets[d].cy - py)
                if dist > MAX_STEP:  # too far to be the same object
                    cost = math.inf
                    break
                cost += dist
            if cost < best[0]:
                best = (cost, choice)
        taken = set()
        for j, d in zip(live, best[1]):
            tracks[j].append(None if d is None else dets[d])
            if d is not None:
                taken.add(d)
        for tr in tracks:
            if len(tr) < k + 1:  # tracks lost earlier stay lost
                tr.append(None)
        for d, det in enumerate(dets):
            if d not in taken:
                tracks.append([None] * k + [det])
    return [Track(tuple(tr)) for tr in tracks]


def _centroid_offset(shape: str) -> float:
    """Vertical offset of a unit shape's centroid from its box centre (y down)."""
    if shape not in SHAPE_VERTICES:
        return 0.0
    x, y = SHAPE_VERTICES[shape][:, 0], SHAPE_VERTICES[shape][:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    return float(((y + np.roll(y, -1)) * cross).sum() / (3 * cross.sum()))


_CENTROID_OFFSETS = {s: _centroid_offset(s) for s in ("circle", *SHAPE_VERTICES)}


@dataclass(frozen=True)
class MotionFit:
    """The motion fitted to a track.

    Attributes:
        direction: initial direction (a key of motion.DIRECTION_VECTORS) or "still".
        speed: "slow" or "fast" (None when still).
        velocity: (vx, vy) per clip, image coordinates (y down).
        error: mean absolute error of the fit (normalised).
        growth: "grow", "shrink" or None.
        growth_ratio: fitted end / start box side.
    """

    direction: str
    speed: str | None
    velocity: tuple[float, float]
    error: float
    growth: str | None
    growth_ratio: float


def _reflect(x: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    u = np.mod(x - low, 2 * span)
    return low + np.where(u <= span, u, 2 * span - u)


def _fit_axis(t: np.ndarray, x: np.ndarray, low: float, high: float) -> tuple[float, np.ndarray]:
    """Velocity per clip and residuals of x(t) = reflect(x0 + v t) by grid search (L1)."""
    # Starts inside the walls only: a start beyond a wall mirrors onto one inside it with the
    # opposite velocity, which would make the initial direction ambiguous.
    x0 = np.clip(x[0] + _OFFSETS, low, high)  # [O]
    path = x0[:, None, None] + _VELOCITIES[None, :, None] * t[None, None, :]  # [O, V, T]
    residual = _reflect(path, low, high) - x[None, None, :]
    cost = np.abs(residual).sum(-1)  # [O, V]
    o, v = np.unravel_index(int(cost.argmin()), cost.shape)
    return float(_VELOCITIES[v]), residual[o, v]


def fit_motion(times: np.ndarray, track: Track) -> MotionFit:
    """Fit the bouncing constant-velocity motion and the growth of a track (frames where it
    is missing are left out; see the module docstring, steps 2 and 3).

    Args:
        times: clip time of each frame [T].
        track: the track.
    Returns:
        The MotionFit.
    """
    present = [(t, d) for t, d in zip(times, track.detections) if d is not None]
    # Time from the track's first frame: the direction is the one it starts with.
    t = np.array([p[0] for p in present]) - present[0][0] if present else np.zeros(0)
    shape = Counter(d.shape for _, d in present).most_common(1)[0][0]  # first on ties
    extents = np.array([d.features.get("extent", 0.0) for _, d in present])
    xs = np.array([d.cx for _, d in present])
    ys = np.array([d.cy for _, d in present]) - _CENTROID_OFFSETS[shape] * extents
    if len(present) >= 2 and np.ptp(t) > 0:
        slope, intercept = np.polyfit(t, extents, 1)
        ratio = float((intercept + slope) / max(intercept, 1e-6))
    else:
        ratio = 1.0
    growth = (
        "grow" if ratio > GROWTH_THRESHOLD else "shrink" if ratio < 1 / GROWTH_THRESHOLD else None
    )
    if len(present) < 2 or np.ptp(t) == 0:
        return MotionFit("still", None, (0.0, 0.0), 0.0, growth, ratio)
    # The walls the world bounces at, moved out to any position seen beyond them (a side
    # estimated a little large must not put the start outside its walls).
    low = min(float(extents.max()) / 2 + BORDER_MARGIN, 0.45)
    vx, rx = _fit_axis(t, xs, min(low, xs.min()), max(1.0 - low, xs.max()))
    vy, ry = _fit_axis(t, ys, min(low, ys.min()), max(1.0 - low, ys.max()))
    error = float(np.mean(np.abs(np.concatenate([rx, ry]))))
    distance = math.hypot(vx, vy)
    if distance < STILL_DISTANCE:
        return MotionFit("still", None, (vx, vy), error, growth, ratio)
    direction = max(
        (d for d in DIRECTION_VECTORS if d != "still"),
        key=lambda d: DIRECTION_VECTORS[d][0] * vx + DIRECTION_VECTORS[d][1] * vy,
    )
    speed = "fast" if distance > SPEED_THRESHOLD else "slow"
    return MotionFit(direction, speed, (vx, vy), error, growth, ratio)


# --------------------------------------------------------------------------------------------
# Checking


@dataclass(frozen=True)
class ClipResult:
    """The verdict for one (clip, prompt) pair.

    Attributes:
        prompt: the prompt text.
        spec: what it requires.
        tracks: the objects followed through the clip.
        fits: the fitted motion of each track.
        assignment: per required object, the index of its track (or None).
        checks: attribute -> satisfied, for every attribute of CLIP_ATTRIBUTES (an attribute
            the prompt does not constrain is satisfied).
        satisfied: every check passed.
    """

    prompt: str
    spec: ClipPromptSpec
    tracks: tuple[Track, ...]
    fits: tuple[MotionFit, ...]
    assignment: tuple[int | None, ...]
    checks: dict[str, bool]
    satisfied: bool

    def summary(self) -> dict[str, Any]:
        """JSON-ready {"prompt", "satisfied", "checks", "motions"} (fitted motion per object)."""
        motions = []
        for j in self.assignment:
            fit = None if j is None else self.fits[j]
            motions.append(
                None
                if fit is None
                else {
                    "direction": fit.direction,
                    "speed": fit.speed,
                    "velocity": [round(v, 3) for v in fit.velocity],
                    "error": round(fit.error, 4),
                    "growth_ratio": round(fit.growth_ratio, 3),
                }
            )
        return {
            "prompt": self.prompt,
            "satisfied": self.satisfied,
            "checks": dict(self.checks),
            "motions": motions,
        }


def _switches(colours: list[str]) -> int:
    return sum(a != b for a, b in itertools.pairwise(colours))


def _object_checks(
    o: ClipObjectSpec, track: Track | None, fit: MotionFit | None
) -> dict[str, bool]:
    """The per-object checks of one required object against one track. A track missing in a
    frame fails every check but flicker (which looks at the frames it has)."""
    if track is None or fit is None:
        return dict.fromkeys(CLIP_ATTRIBUTES, False)
    dets = [d for d in track.detections if d is not None]
    colours = [d.colour for d in dets]
    if o.colour_to is None:
        colour = o.colour is None or all(c == o.colour for c in colours)
    else:
        colour = (
            (o.colour is None or colours[0] == o.colour)
            and colours[-1] == o.colour_to
            and _switches(colours) == 1
        )
    if o.size is None:
        size = True
    elif o.growth is None:
        size = all(d.size == o.size for d in dets)
    else:
        size = dets[0].size == o.size
    if o.cell is None:
        position = True
    elif o.direction == "still":
        position = all(d.cell == o.cell for d in dets)
    else:
        position = dets[0].cell == o.cell
    complete = track.complete
    # Motion is judged only on a track followed through every frame: fragments of a clip
    # whose frames are shuffled can line up by chance.
    moving_ok = complete and fit.error <= MAX_FIT_ERROR
    return {
        "shape": complete and (o.shape is None or all(d.shape == o.shape for d in dets)),
        "colour": complete and colour,
        "size": complete and size,
        "position": complete and position,
        "direction": o.direction is None or (moving_ok and fit.direction == o.direction),
        "speed": o.speed is None or (moving_ok and fit.speed == o.speed),
        # a prompt that says nothing of motion ("a red circle") leaves the growth free too
        "growth": (complete and fit.growth == o.growth)
        or (o.direction is None and o.growth is None),
        "identity": complete,
        "flicker": _steady(track, o),
    }


def _steady(track: Track, o: ClipObjectSpec) -> bool:
    """No shape change along the track and no more colour switches than the caption says."""
    dets = [d for d in track.detections if d is not None]
    allowed = 0 if o.colour_to is None else 1
    return len({d.shape for d in dets}) == 1 and _switches([d.colour for d in dets]) <= allowed


def check_clip_prompt(
    spec: ClipPromptSpec, frames: Sequence[Sequence[Detection]], times: np.ndarray, prompt: str = ""
) -> ClipResult:
    """Track the objects of a clip, fit their motions and check every attribute.

    Args:
        spec: the parsed prompt.
        frames: per frame, its detections.
        times: clip time of each frame [T].
        prompt: the prompt text, kept in the result.
    Returns:
        The ClipResult.
    """
    tracks = tuple(track_objects(frames))
    fits = tuple(fit_motion(times, tr) for tr in tracks)
    k = len(spec.objects)
    if not spec.objects:  # nothing recognisable in the prompt: nothing can be satisfied
        checks = dict.fromkeys(CLIP_ATTRIBUTES, False)
        return ClipResult(prompt, spec, tracks, fits, (), checks, False)
    pool = sorted(
        range(len(tracks)), key=lambda j: -sum(d is not None for d in tracks[j].detections)
    )
    pool = pool[:6]
    best: tuple[int, tuple[int | None, ...], list[dict[str, bool]]] | None = None
    options: list[int | None] = [*pool, *([None] * k)]
    for assignment in dict.fromkeys(itertools.permutations(options, k)):
        per_object = [
            _object_checks(o, None if j is None else tracks[j], None if j is None else fits[j])
            for o, j in zip(spec.objects, assignment)
        ]
        score = sum(_WEIGHTS.get(a, 1) * ok for c in per_object for a, ok in c.items())
        if best is None or score > best[0]:
            best = (score, assignment, per_object)
    assert best is not None
    _, assignment, per_object = best
    checks = {a: all(c[a] for c in per_object) for a in CLIP_ATTRIBUTES if a != "count"}
    checks["count"] = all(len(dets) == k for dets in frames)
    checks["identity"] = checks["identity"] and len(tracks) == k
    checks = {a: checks[a] for a in CLIP_ATTRIBUTES}
    return ClipResult(prompt, spec, tracks, fits, assignment, checks, all(checks.values()))


@dataclass(frozen=True)
class ClipAdherenceReport:
    """Prompt adherence of a set of clips.

    Attributes:
        n: number of (clip, prompt) pairs.
        score: fraction of prompts fully satisfied.
        breakdown: attribute -> fraction of prompts whose requirement on it is satisfied
            (CLIP_ATTRIBUTES; "identity" and "flicker" are the temporal-consistency rates),
            and "objects": every object check (OBJECT_ATTRIBUTES) passed, in every frame.
        results: per-pair verdicts.
    """

    n: int
    score: float
    breakdown: dict[str, float]
    results: tuple[ClipResult, ...] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready {"n", "score", "breakdown"}."""
        return {"n": self.n, "score": self.score, "breakdown": dict(self.breakdown)}


def _as_frame_batches(clips: Any) -> list[np.ndarray]:
    """Clips -> list of per-clip frame arrays the image detector takes: uint8 [T, H, W, 3] or
    float [T, 3, H, W] in [-1, 1]."""
    if isinstance(clips, (list, tuple)):
        return [frames for item in clips for frames in _as_frame_batches(item)]
    if hasattr(clips, "detach"):  # torch tensor
        clips = clips.detach().cpu()
        clips = clips.float().numpy() if clips.is_floating_point() else clips.numpy()
    array = np.asarray(clips)
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5:
        raise ValueError(
            "expected a clip or a batch of clips (uint8 [N, T, H, W, 3] or float "
            f"[N, 3, T, H, W] in [-1, 1]), got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        if array.shape[-1] != 3:
            raise ValueError(f"uint8 clips must be [N, T, H, W, 3], got shape {array.shape}")
        return list(array)
    if array.shape[1] != 3:
        raise ValueError(f"float clips must be [N, 3, T, H, W] in [-1, 1], got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("float clips contain NaN or infinite values")
    return list(array.transpose(0, 2, 1, 3, 4))  # [N, T, 3, H, W]


def detect_clip_objects(clips: Any, batch_size: int = 256) -> list[list[list[Detection]]]:
    """Detect the objects in every frame of every clip.

    Args:
        clips: uint8 [N, T, H, W, 3] or float [N, 3, T, H, W] in [-1, 1] (numpy or torch), one
            clip without N, or a sequence of clips (frame counts and sizes may differ).
        batch_size: frames analysed together.
    Returns:
        Per clip, per frame, its detections.
    """
    batches = _as_frame_batches(clips)
    frames = [frame for batch in batches for frame in batch]
    flat = detect_objects(frames, batch_size=batch_size) if frames else []
    out, start = [], 0
    for batch in batches:
        out.append(flat[start : start + len(batch)])
        start += len(batch)
    return out


def score_clip_detections(
    detections: Sequence[Sequence[Sequence[Detection]]], prompts: Sequence[str]
) -> ClipAdherenceReport:
    """`evaluate_clips` on detections already computed (one detection pass serves several
    prompt lists, e.g. captions and paraphrases of the same clips)."""
    if len(detections) != len(prompts):
        raise ValueError(f"got {len(detections)} clips but {len(prompts)} prompts")
    results = []
    for prompt, frames in zip(prompts, detections):
        spec = parse_clip_prompt(prompt)
        if not spec.objects:
            logger.warning("no Shapes object recognised in prompt %r", prompt)
        results.append(check_clip_prompt(spec, frames, frame_times(len(frames)), prompt))
    n = len(results)
    score = sum(r.satisfied for r in results) / max(n, 1)
    breakdown = {a: sum(r.checks[a] for r in results) / max(n, 1) for a in CLIP_ATTRIBUTES}
    objects = sum(all(r.checks[a] for a in OBJECT_ATTRIBUTES) for r in results)
    breakdown["objects"] = objects / max(n, 1)
    return ClipAdherenceReport(n=n, score=score, breakdown=breakdown, results=tuple(results))


def evaluate_clips(
    clips: Any, prompts: Sequence[str], batch_size: int = 256
) -> ClipAdherenceReport:
    """Score how well each clip follows its prompt.

    Args:
        clips: N clips (see `detect_clip_objects`).
        prompts: N clip captions (training vocabulary, paraphrases or anything with their words).
        batch_size: frames analysed together.
    Returns:
        The ClipAdherenceReport: fraction fully satisfied and per-attribute fractions.
    """
    detections = detect_clip_objects(clips, batch_size=batch_size)
    return score_clip_detections(detections, prompts)
