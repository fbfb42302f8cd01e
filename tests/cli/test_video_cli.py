"""`diffuse video`: a clip, its contact sheet and sidecar from a tiny video model; image-to-
video; bad input fails with one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuse.cli import main
from diffuse.video_files import read_clip_frames, read_clip_parameters
from video_recipe import video_train_args

PROMPT = "a red circle moving to the right"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("video-cli") / "run"
    assert main(video_train_args(out)) == 0
    return out / "model"


def video(model: Path, output: Path, *extra: str) -> list[str]:
    return ["video", PROMPT, "--model", str(model), "--steps", "2", "--no-progress",
            "-o", str(output), *extra]  # fmt: skip


def test_writes_clip_sheet_and_sidecar_and_same_seed_same_clip(model, tmp_path, capsys) -> None:
    out = tmp_path / "clip.gif"
    assert main(video(model, out, "--frames", "3", "--seed", "5")) == 0
    printed = capsys.readouterr().out.split()
    sheet, sidecar = tmp_path / "clip-sheet.png", tmp_path / "clip.gif.json"
    assert out.is_file() and sheet.is_file() and sidecar.is_file()
    assert set(printed) == {str(out), str(sheet), str(sidecar), str(sheet) + ".json"}
    meta = json.loads(sidecar.read_text())["parameters"]
    assert meta["prompt"] == PROMPT and meta["seed"] == 5 and meta["frames"] == 3
    assert read_clip_parameters(out) == meta == read_clip_parameters(sheet)  # embedded too
    with Image.open(out) as gif:
        assert gif.n_frames == 3 and gif.size == (16, 16)
    again = tmp_path / "again.gif"
    assert main(video(model, again, "--frames", "3", "--seed", "5")) == 0
    with Image.open(out) as a, Image.open(again) as b:
        for k in range(3):
            a.seek(k), b.seek(k)
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_static_prompt_and_image_to_video(model, tmp_path) -> None:
    start = tmp_path / "start.png"
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[5:11, 5:11] = (40, 200, 40)
    Image.fromarray(pixels).save(start)
    out = tmp_path / "anim.webp"
    args = video(model, out, "--image", str(start), "--frames", "4")
    args[1] = "a green square"  # no motion named: a still clip is fine
    assert main(args) == 0
    meta = read_clip_parameters(out)
    assert meta["image_hash"] and meta["image"] == str(start)
    assert read_clip_frames(out).shape == (4, 16, 16, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frames", "0"], "--frames must be >= 1, got 0"),
        (["--frames", "9"], "frames must be in 1..4"),
        (["--steps", "0"], "steps must be in 1..1000, got 0"),
        (["--sampler", "nope"], "unknown sampler"),
    ],
)
def test_bad_settings_write_nothing(model, tmp_path, capsys, extra, message) -> None:
    out = tmp_path / "clip.webp"
    assert main(video(model, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_start_image_of_another_size(model, tmp_path, capsys) -> None:
    start = tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(start)
    out = tmp_path / "clip.webp"
    assert main(video(model, out, "--image", str(start))) == 2
    assert "32" in capsys.readouterr().err
    assert not out.exists()


def test_existing_output_needs_overwrite(model, tmp_path, capsys) -> None:
    out = tmp_path / "clip.webp"
    out.write_bytes(b"mine")
    assert main(video(model, out, "--frames", "2")) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"mine" and not (tmp_path / "clip.webp.json").exists()
    assert main(video(model, out, "--frames", "2", "--overwrite")) == 0
    assert out.read_bytes() != b"mine"


def test_unwritable_output_and_bad_format(model, tmp_path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "clip.webp"
    assert main(video(model, out)) == 2
    assert "cannot write in" in capsys.readouterr().err
    assert main(video(model, tmp_path / "clip.avi")) == 2
    assert "output must end in" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
