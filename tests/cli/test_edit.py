"""`diffuse edit` and `diffuse inpaint`: PNGs carrying their parameters, `--from-png` bit for
bit, and bad input refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuse.cli import main
from diffuse.pngmeta import read_params
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, sample_split_scene

STEPS = ["--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, str]:
    """A 32 px held-out render, a mask of its top-left quarter, and its caption."""
    folder = tmp_path_factory.mktemp("inputs")
    scene = sample_split_scene(7, 3, "heldout")
    Image.fromarray(render_scene(scene, 32)).save(folder / "scene.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:16, :16] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "scene.png", folder / "mask.png", caption(scene, 7, 3)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    ("command", "extra", "task"),
    [
        (["edit"], ["--strength", "0.55", "--sampler", "euler_ancestral"], "img2img"),
        (
            ["edit"],
            ["--invert", "--source", "SOURCE", "--refine", "2", "--source-guidance", "2.5"],
            "inversion",
        ),
        (["inpaint"], ["--mask", "MASK", "--resample", "2"], "inpaint"),
    ],
    ids=["img2img", "inversion", "inpaint"],
)
def test_from_png_reproduces_bit_for_bit(command, extra, task, t2i_run, inputs, tmp_path):
    image, mask, prompt = inputs
    extra = [str(mask) if e == "MASK" else prompt if e == "SOURCE" else e for e in extra]
    first = tmp_path / "first.png"
    args = [*command, str(image), "a blue star", *extra, "--model", str(t2i_run), "--seed", "4"]
    assert main([*args, "-o", str(first), *STEPS]) == 0
    stored = read_params(first)
    assert stored["task"] == task and stored["seed"] == 4 and len(stored["image_hash"]) == 16
    if task == "img2img":
        assert stored["strength"] == 0.55 and stored["sampler"] == "euler_ancestral"
    if task == "inversion":
        assert stored["source_prompt"] == prompt and stored["refine"] == 2
        assert stored["source_guidance"] == 2.5
    if task == "inpaint":
        assert stored["resample"] == 2 and len(stored["mask_hash"]) == 16
        keep = pixels(mask)[..., 0] == 0
        assert np.array_equal(pixels(first)[keep], pixels(image)[keep])
    again = tmp_path / "again.png"
    assert (
        main(
            [
                command[0],
                "--from-png",
                str(first),
                "--model",
                str(t2i_run),
                "-o",
                str(again),
                "--no-progress",
            ]
        )
        == 0
    )
    assert np.array_equal(pixels(again), pixels(first))
    assert read_params(again) == stored


def test_from_png_refuses_another_image(t2i_run, inputs, tmp_path, capsys):
    image, _, prompt = inputs
    first = tmp_path / "first.png"
    base = ["--model", str(t2i_run), *STEPS]
    assert main(["edit", str(image), prompt, "-o", str(first), *base]) == 0
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(other)
    out = tmp_path / "out.png"
    assert main(["edit", str(other), "--from-png", str(first), "-o", str(out), *base]) == 2
    assert "made from another image" in capsys.readouterr().err
    assert not out.exists()
    assert main(["inpaint", "--from-png", str(first), "-o", str(out), *base]) == 2
    assert "made by 'img2img', not by 'inpaint'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["edit", "IMAGE", "p", "--strength", "1.5"], r"strength must be in (0, 1], got 1.5"),
        (["edit", "IMAGE", "p", "--strength", "0"], r"strength must be in (0, 1], got 0.0"),
        (["edit", "BIG", "p"], "is 48x48 pixels; the model works at 32x32"),
        (["edit", "IMAGE", "p", "--invert"], "--invert needs --source"),
        (["edit", "IMAGE", "p", "--source", "x"], "--source, --refine and --source-guidance need"),
        (["edit", "IMAGE", "p", "--source-guidance", "3"], "--source-guidance need --invert"),
        (
            ["edit", "IMAGE", "p", "--invert", "--source", "x", "--source-guidance", "-1"],
            "source guidance must be a finite number >= 0, got -1.0",
        ),
        (["inpaint", "IMAGE", "p", "--mask", "GREY"], "is not binary: it holds values [128]"),
        (["inpaint", "IMAGE", "p", "--mask", "SMALL"], "it must be a 32x32 grey image"),
        (["inpaint", "IMAGE", "p"], "give --mask MASK"),
        (["edit", "MISSING", "p"], "no such image"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(
    args, message, t2i_run, inputs, tmp_path, capsys
):
    image, mask, _ = inputs
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(tmp_path / "big.png")
    grey = pixels(mask)[..., 0].copy()
    grey[5, 5] = 128
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "small.png")
    names = {
        "IMAGE": image,
        "BIG": tmp_path / "big.png",
        "GREY": tmp_path / "grey.png",
        "SMALL": tmp_path / "small.png",
        "MISSING": tmp_path / "missing.png",
    }
    args = [str(names.get(a, a)) for a in args]
    out = tmp_path / "out.png"
    assert main([*args, "--model", str(t2i_run), "-o", str(out), *STEPS]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_no_overwrite_without_the_flag(t2i_run, inputs, tmp_path, capsys):
    image, mask, prompt = inputs
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    base = [str(image), prompt, "--model", str(t2i_run), "-o", str(out), *STEPS]
    assert main(["edit", *base]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["inpaint", *base, "--mask", str(mask)]) == 2
    assert out.read_bytes() == b"precious"
    assert main(["edit", *base, "--overwrite"]) == 0
    assert read_params(out)["task"] == "img2img"
