"""Clip files: round trips of frames and parameters, overwrite protection, clear errors."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from diffuse.shapes.motion import render_clip, sample_clip_scenes
from diffuse.video_files import (
    ClipFileError,
    contact_sheet,
    read_clip_frames,
    read_clip_parameters,
    read_clip_record,
    read_embedded_record,
    sidecar_path,
    write_clip,
)

PARAMS = {"prompt": 'a red circle moves right; = # \\ "quoted" <b> & more', "seed": 7, "steps": 25}


@pytest.fixture(scope="module")
def frames():
    clips = sample_clip_scenes(4, 0, max_objects=3)
    clip = max(clips, key=lambda c: len(c.objects))
    return render_clip(clip, 16, 32)


def _ffmpeg_installed() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def test_webp_lossless_and_png_sheet_are_exact(tmp_path, frames):
    for name in ("clip.webp", "clip.png"):
        written = write_clip(tmp_path / name, frames, PARAMS, fps=10)
        assert written == [tmp_path / name, sidecar_path(tmp_path / name)]
        assert np.array_equal(read_clip_frames(tmp_path / name), frames)
        embedded = read_embedded_record(tmp_path / name)
        assert embedded["parameters"] == PARAMS and embedded["clip"]["fps"] == 10.0
        assert json.loads(sidecar_path(tmp_path / name).read_text()) == embedded
        assert read_clip_parameters(tmp_path / name) == PARAMS


def test_contact_sheet_layout(tmp_path, frames):
    write_clip(tmp_path / "sheet.png", frames[:10], PARAMS, columns=4)
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.size == (4 * 32, 3 * 32)  # 10 frames in rows of 4
    sheet = contact_sheet(frames[:10], columns=4)
    assert np.array_equal(sheet[32:64, 64:96], frames[6]) and not sheet[64:, 64:].any()
    assert np.array_equal(read_clip_frames(tmp_path / "sheet.png"), frames[:10])


def test_gif_palette_loss_is_bounded(tmp_path, frames):
    write_clip(tmp_path / "clip.gif", frames, PARAMS)
    back = read_clip_frames(tmp_path / "clip.gif").astype(int)
    assert back.shape == frames.shape
    error = np.abs(back - frames)
    assert error.mean() < 2.0 and np.percentile(error, 99) <= 24
    assert read_embedded_record(tmp_path / "clip.gif")["parameters"] == PARAMS


def test_lossy_webp_is_close(tmp_path, frames):
    write_clip(tmp_path / "clip.webp", frames, PARAMS, lossless=False)
    back = read_clip_frames(tmp_path / "clip.webp").astype(int)
    assert back.shape == frames.shape and np.abs(back - frames).mean() < 4.0


@pytest.mark.parametrize("name", ["clip.webp", "clip.gif", "clip.png"])
def test_still_clips_keep_their_frame_count(tmp_path, frames, name):
    still = np.repeat(frames[:1], 8, axis=0)
    still[5:] = frames[3]  # two runs of identical frames
    write_clip(tmp_path / name, still, PARAMS)
    back = read_clip_frames(tmp_path / name)
    assert back.shape == still.shape
    if name != "clip.gif":
        assert np.array_equal(back, still)
    single = np.repeat(frames[:1], 8, axis=0)
    write_clip(tmp_path / ("all-" + name), single, PARAMS)
    assert read_clip_frames(tmp_path / ("all-" + name)).shape == single.shape


def test_scale_enlarges_frames(tmp_path, frames):
    write_clip(tmp_path / "big.webp", frames[:4], PARAMS, scale=3)
    back = read_clip_frames(tmp_path / "big.webp")
    assert np.array_equal(back, frames[:4].repeat(3, axis=1).repeat(3, axis=2))
    assert read_clip_record(tmp_path / "big.webp")["clip"]["scale"] == 3


@pytest.mark.skipif(not _ffmpeg_installed(), reason="needs the video extra (imageio-ffmpeg)")
def test_mp4_round_trip(tmp_path, frames):
    write_clip(tmp_path / "clip.mp4", frames, PARAMS, fps=12)
    back = read_clip_frames(tmp_path / "clip.mp4").astype(int)
    assert back.shape == frames.shape
    assert np.abs(back - frames).mean() < 4.0  # H.264, 4:2:0 chroma: lossy but close
    assert read_embedded_record(tmp_path / "clip.mp4")["parameters"] == PARAMS
    with pytest.raises(ClipFileError, match="needs even frame sides, got 31x32"):
        write_clip(tmp_path / "odd.mp4", frames[:, :31], PARAMS)


def test_mp4_without_the_extra_names_it(tmp_path, frames, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import now fails
    with pytest.raises(ClipFileError, match=r"pip install 'diffuse\[video\]'"):
        write_clip(tmp_path / "clip.mp4", frames, PARAMS)
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_never_replaced_without_overwrite(tmp_path, frames):
    path = tmp_path / "clip.gif"
    write_clip(path, frames, PARAMS)
    before = path.read_bytes(), sidecar_path(path).read_text()
    with pytest.raises(FileExistsError, match="clip.gif exists; pass --overwrite"):
        write_clip(path, frames[::-1].copy(), {"seed": 1})
    assert (path.read_bytes(), sidecar_path(path).read_text()) == before
    other = tmp_path / "other.webp"
    sidecar_path(other).write_text("{}")  # a sidecar alone also blocks
    with pytest.raises(FileExistsError, match="other.webp.json exists"):
        write_clip(other, frames, PARAMS)
    assert not other.exists()
    write_clip(path, frames[::-1].copy(), {"seed": 1}, overwrite=True)
    assert read_clip_parameters(path) == {"seed": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.gif",
        "clip.gif.json",
        "other.webp.json",
    ]


def test_bad_paths_and_arguments_fail_clearly(tmp_path, frames):
    with pytest.raises(ClipFileError, match=r"unknown clip format '\.avi'; use \.webp, \.gif"):
        write_clip(tmp_path / "clip.avi", frames, PARAMS)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ClipFileError, match=r"file/clip.webp: cannot be written"):
        write_clip(blocker / "clip.webp", frames, PARAMS)
    with pytest.raises(ValueError, match=r"frames must be uint8 \[T, H, W, 3\], got float32"):
        write_clip(tmp_path / "a.gif", frames.astype(np.float32), PARAMS)
    with pytest.raises(ValueError, match="got uint8 of shape"):
        write_clip(tmp_path / "a.gif", frames[0], PARAMS)
    with pytest.raises(ValueError, match="fps must be a positive number, got nan"):
        write_clip(tmp_path / "a.gif", frames, PARAMS, fps=float("nan"))
    with pytest.raises(ValueError, match="scale must be an integer >= 1, got 0"):
        write_clip(tmp_path / "a.gif", frames, PARAMS, scale=0)
    with pytest.raises(ValueError, match="params must be JSON-serialisable"):
        write_clip(tmp_path / "a.gif", frames, {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_readers_fall_back_to_the_sidecar_and_say_what_is_missing(tmp_path, frames):
    path = tmp_path / "plain.gif"
    Image.fromarray(frames[0]).save(path)  # a GIF with no parameters inside
    assert read_embedded_record(path) is None
    with pytest.raises(ClipFileError, match="no parameters inside and no sidecar plain.gif.json"):
        read_clip_parameters(path)
    record = {"parameters": PARAMS, "clip": {"frames": 1, "frame_ms": 125}}
    sidecar_path(path).write_text(json.dumps(record))
    assert read_clip_parameters(path) == PARAMS
    with pytest.raises(FileNotFoundError, match="no such clip file"):
        read_clip_parameters(tmp_path / "missing.webp")
    broken = tmp_path / "broken.webp"
    broken.write_bytes(b"not a webp")
    with pytest.raises(ClipFileError, match="broken.webp: not a readable webp clip"):
        read_clip_parameters(broken)
