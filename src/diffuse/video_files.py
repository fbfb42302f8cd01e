"""Clip files: animated WebP and GIF (Pillow), MP4 (the optional `video` extra, imageio-ffmpeg)
and a PNG contact sheet, each with its parameters inside and always in a sidecar JSON.

    write_clip("clip.webp", frames, {"prompt": "a red circle moves right", "seed": 0})
    read_clip_frames("clip.webp")        # uint8 [T, H, W, 3], the frames written (lossless)
    read_clip_parameters("clip.webp")    # {"prompt": ..., "seed": 0}

Every file carries one JSON record, {"parameters": the caller's parameters, "clip": {frames,
height, width, fps, frame_ms, scale, format, and for a sheet its columns and rows}}:

- WebP: in an XMP packet (Pillow writes the `xmp` chunk), as the text of `diffuse:record`;
- GIF: in the GIF comment extension (Pillow's `comment`);
- MP4: in the container's `comment` tag (ffmpeg `-metadata`), read back with ffmpeg's
  ffmetadata output;
- PNG contact sheet: in a text chunk under the key "diffuse" (`diffuse.pngmeta`);
- and for every format in `<file>.json` beside it (`sidecar_path`), which readers fall back to.

Animated WebP and GIF encoders merge a frame identical to the one before into that frame (a
longer display time; WebP stores a clip of identical frames as one still picture);
`read_clip_frames` expands such frames again by their duration and the record's frame count,
so a still clip reads back with all its frames. WebP is lossless by default (frames read back
exactly); GIF quantises each frame to a 256-colour palette; MP4 is lossy (H.264, yuv420p, so
frame sides must be even). Writes are atomic (`diffuse.io`): an existing file or sidecar is
never replaced unless `overwrite` is set, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, unescape

import numpy as np
from PIL import Image

from diffuse.io import atomic_path, atomic_write_text
from diffuse.pngmeta import read_params, save_png

__all__ = [
    "CLIP_FORMATS",
    "ClipFileError",
    "write_clip",
    "read_clip_frames",
    "read_clip_parameters",
    "read_clip_record",
    "read_embedded_record",
    "contact_sheet",
    "sidecar_path",
]

# File extension -> format name.
CLIP_FORMATS: dict[str, str] = {
    ".webp": "webp",
    ".gif": "gif",
    ".mp4": "mp4",
    ".png": "contact-sheet",
}
_XMP_NAMESPACE = "urn:diffuse:clip:1"
_XMP_RECORD = re.compile(r"<diffuse:record>(.*?)</diffuse:record>", re.DOTALL)
_VIDEO_EXTRA = "the MP4 writer needs imageio-ffmpeg: pip install 'diffuse[video]'"


class ClipFileError(ValueError):
    """A clip file cannot be written or read; the message names the file and the reason."""


def sidecar_path(path: str | Path) -> Path:
    """The sidecar JSON of a clip file: `clip.webp` -> `clip.webp.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in CLIP_FORMATS:
        known = ", ".join(CLIP_FORMATS)
        raise ClipFileError(f"{path}: unknown clip format {suffix or '(none)'!r}; use {known}")
    return CLIP_FORMATS[suffix]


def _check_frames(frames: Any) -> np.ndarray:
    """Frames as a C-contiguous uint8 [T, H, W, 3] array (ValueError naming what is wrong)."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy uint8 array [T, H, W, 3], got {type(frames)}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3], got {frames.dtype} of shape {frames.shape}"
        )
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must hold at least one 1x1 frame, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def contact_sheet(frames: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Frames laid out in a grid, left to right then top to bottom (empty cells black).

    Args:
        frames: uint8 [T, H, W, 3].
        columns: frames per row (default min(T, 8)).
    Returns:
        uint8 [rows * H, columns * W, 3].
    """
    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    columns = min(t, 8) if columns is None else columns
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    rows = math.ceil(t / columns)
    grid = np.zeros((rows * columns, h, w, 3), np.uint8)
    grid[:t] = frames
    # [rows, columns, H, W, 3] -> [rows, H, columns, W, 3] -> [rows * H, columns * W, 3]
    return grid.reshape(rows, columns, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(rows * h, -1, 3)


def _xmp(record: Mapping[str, Any]) -> bytes:
    """An XMP packet holding the record's JSON as the text of diffuse:record."""
    text = escape(json.dumps(record, sort_keys=True))
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:diffuse="{_XMP_NAMESPACE}">'
        f"<diffuse:record>{text}</diffuse:record>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def _write_animation(
    tmp: Path, frames: np.ndarray, record: dict[str, Any], kind: str, lossless: bool
) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    options: dict[str, Any] = {
        "save_all": True,
        "append_images": images[1:],
        "duration": record["clip"]["frame_ms"],
        "loop": 0,
    }
    if kind == "webp":
        options.update(lossless=lossless, quality=100 if lossless else 90, xmp=_xmp(record))
        images[0].save(tmp, format="WEBP", **options)
    else:
        comment = json.dumps(record, sort_keys=True).encode()
        images[0].save(tmp, format="GIF", comment=comment, optimize=False, **options)


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg  # optional: the `video` extra
    except ImportError:
        raise ClipFileError(_VIDEO_EXTRA) from None
    return imageio_ffmpeg


def _write_mp4(tmp: Path, frames: np.ndarray, record: dict[str, Any]) -> None:
    imageio_ffmpeg = _ffmpeg()
    t, h, w, _ = frames.shape
    comment = json.dumps(record, sort_keys=True)
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (w, h),
        fps=record["clip"]["fps"],
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,  # sides are checked even; no resizing
        ffmpeg_log_level="error",
        output_params=["-crf", "12", "-metadata", f"comment={comment}", "-f", "mp4"],
    )
    writer.send(None)  # start ffmpeg
    for frame in frames:
        writer.send(frame)
    writer.close()


def write_clip(
    path: str | Path,
    frames: np.ndarray,
    params: Mapping[str, Any],
    *,
    fps: float = 8.0,
    overwrite: bool = False,
    lossless: bool = True,
    scale: int = 1,
    columns: int | None = None,
) -> list[Path]:
    """Write a clip (format from the extension) and its sidecar JSON, atomically.

    Args:
        path: .webp, .gif, .mp4 or .png (a contact sheet); a missing parent folder is made.
        frames: uint8 [T, H, W, 3].
        params: JSON-serialisable parameters (prompt, seed, ...), stored in the file where the
            format allows and always in the sidecar.
        fps: frames per second (animations and MP4).
        overwrite: replace an existing file and sidecar; otherwise either existing is an error.
        lossless: WebP only: lossless (exact frames) or lossy (quality 90).
        scale: enlarge every frame by this integer factor (nearest neighbour) before writing.
        columns: contact sheet only: frames per row (default min(T, 8)).
    Returns:
        [the clip file, its sidecar].
    Raises:
        ClipFileError: unknown extension, MP4 without the `video` extra, odd MP4 sides, or a
            path that cannot be written.
        FileExistsError: the file or its sidecar exists and `overwrite` is not set.
        ValueError: bad frames, fps, scale or parameters.
    """
    path = Path(path)
    kind = _format(path)
    frames = _check_frames(frames)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if not (isinstance(scale, int) and scale >= 1):
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    t, h, w, _ = frames.shape
    if kind == "mp4":
        _ffmpeg()  # fail before anything is written
        if h % 2 or w % 2:
            raise ClipFileError(f"{path}: MP4 (yuv420p) needs even frame sides, got {h}x{w}")
    sidecar = sidecar_path(path)
    for existing in (path, sidecar):
        if existing.exists() and not overwrite:
            raise FileExistsError(f"{existing} exists; pass --overwrite to replace it")
    clip: dict[str, Any] = {
        "format": kind,
        "frames": t,
        "height": h,
        "width": w,
        "fps": float(fps),
        "frame_ms": max(1, round(1000 / fps)),
        "scale": scale,
    }
    if kind == "contact-sheet":
        clip["columns"] = min(t, 8) if columns is None else columns
        clip["rows"] = math.ceil(t / clip["columns"]) if clip["columns"] >= 1 else 0
    try:
        record = json.loads(json.dumps({"parameters": dict(params), "clip": clip}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"params must be JSON-serialisable: {err}") from None
    try:
        if kind == "contact-sheet":
            sheet = Image.fromarray(contact_sheet(frames, clip["columns"]))
            save_png(sheet, path, record, overwrite=True)
        else:
            with atomic_path(path) as tmp:
                if kind == "mp4":
                    _write_mp4(tmp, frames, record)
                else:
                    _write_animation(tmp, frames, record, kind, lossless)
        atomic_write_text(sidecar, json.dumps(record, indent=2, sort_keys=True) + "\n")
    except OSError as err:
        reason = err.strerror or str(err)
        raise ClipFileError(f"{path}: cannot be written ({reason})") from None
    return [path, sidecar]


def read_embedded_record(path: str | Path) -> dict[str, Any] | None:
    """The record stored inside a clip file (None when the file carries none)."""
    path = Path(path)
    kind = _format(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such clip file: {path}")
    try:
        if kind == "contact-sheet":
            try:
                return read_params(path)
            except ValueError as err:
                if "carries no" in str(err):
                    return None
                raise
        if kind == "mp4":
            return _mp4_record(path)
        with Image.open(path) as image:
            if kind == "webp":
                xmp = image.info.get("xmp")
                found = _XMP_RECORD.search(xmp.decode("utf-8", "replace")) if xmp else None
                return json.loads(unescape(found.group(1))) if found else None
            comment = image.info.get("comment")
            return json.loads(comment) if comment else None
    except (OSError, json.JSONDecodeError) as err:
        raise ClipFileError(f"{path}: not a readable {kind} clip with parameters ({err})") from None


def _mp4_record(path: Path) -> dict[str, Any] | None:
    """The comment tag of an MP4, via ffmpeg's ffmetadata output."""
    run = subprocess.run(
        [_ffmpeg().get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise ClipFileError(f"{path}: not a readable MP4 ({run.stderr.strip()})")
    # ffmetadata escapes '=', ';', '#', '\' and newlines with a backslash.
    text = re.sub(r"\\\n", "\n", run.stdout)
    for line in text.split("\n"):
        if line.startswith("comment="):
            return json.loads(re.sub(r"\\(.)", r"\1", line[len("comment=") :]))
    return None


def read_clip_record(path: str | Path) -> dict[str, Any]:
    """The record of a clip file: from inside the file, else from its sidecar JSON.

    Returns:
        {"parameters": ..., "clip": {...}} (see the module docstring).
    """
    path = Path(path)
    record = read_embedded_record(path)
    if record is not None:
        return record
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ClipFileError(f"{path}: no parameters inside and no sidecar {sidecar.name}")
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as err:
        raise ClipFileError(f"{sidecar}: not valid JSON ({err})") from None


def read_clip_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters `write_clip` stored for a clip file (inside it, else in its sidecar)."""
    return read_clip_record(path)["parameters"]


def read_clip_frames(path: str | Path) -> np.ndarray:
    """The frames of a clip file as written (after `scale`), uint8 [T, H, W, 3].

    Merged identical frames of a WebP or GIF are expanded by their duration; a contact sheet is
    cut into its frames by the layout in its record.
    """
    path = Path(path)
    kind = _format(path)
    clip = read_clip_record(path)["clip"]
    if kind == "mp4":
        reader = _ffmpeg().read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])
    with Image.open(path) as image:
        if kind == "contact-sheet":
            sheet = np.asarray(image.convert("RGB"))
            rows, columns = clip["rows"], clip["columns"]
            h, w = clip["height"], clip["width"]
            grid = sheet.reshape(rows, h, columns, w, 3).transpose(0, 2, 1, 3, 4)
            return grid.reshape(rows * columns, h, w, 3)[: clip["frames"]].copy()
        frames = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()
            repeat = max(1, round(image.info.get("duration", clip["frame_ms"]) / clip["frame_ms"]))
            frames.extend([np.asarray(image.convert("RGB"))] * repeat)
    # An animation of identical frames can be stored as one still picture (WebP does so),
    # which keeps no duration: it shows the last frame for the rest of the clip.
    frames.extend(frames[-1:] * (clip["frames"] - len(frames)))
    return np.stack(frames)
