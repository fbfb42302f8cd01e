"""Text to image: `load_pipeline` and `diffuse generate` on a tiny text-conditioned model.

The model is trained through `diffuse train` on the real recipe (configs/shapes-t2i.toml)
shrunk with --set: a few steps at a high learning rate without warm-up, so that the prompt
visibly changes the output (the `t2i_run` fixture, tests/conftest.py). Images are compared
pixel for pixel.
"""

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.pipelines.text_to_image import (
    GenerationParams,
    load_pipeline,
    weights_hash,
)
from diffuse.pngmeta import read_params, save_png

PROMPT = "a red circle above a blue square"
STEPS = 3
PARAM_KEYS = {
    "prompt",
    "negative_prompt",
    "seed",
    "sampler",
    "schedule",
    "steps",
    "guidance",
    "size",
    "model",
    "model_hash",
}


@pytest.fixture(scope="module")
def run(t2i_run) -> Path:
    """A run folder (named "run") holding a tiny text-to-image model in run/model."""
    return t2i_run


@pytest.fixture(scope="module")
def pipe(run):
    return load_pipeline(run)


def same(a, b) -> bool:
    return a.size == b.size and a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))


# --- the pipeline ------------------------------------------------------------------------------


def test_load_pipeline_returns_pil_images_of_the_model_size(pipe, run):
    images = pipe(PROMPT, seeds=[0, 1], steps=STEPS)
    assert len(images) == 2 and pipe.size == 32
    for image in images:
        assert image.size == (32, 32) and image.mode == "RGB"
    assert not same(images[0], images[1])  # different seeds differ
    assert np.asarray(images[0]).std() > 0
    assert pipe.name == "run"  # a run folder's model is named after the run
    assert pipe.model_hash == weights_hash(run / "model")
    assert re.fullmatch(r"[0-9a-f]{12}", pipe.model_hash)


def test_run_folder_and_model_folder_load_the_same_model(pipe, run):
    by_model = load_pipeline(run / "model")
    assert (by_model.name, by_model.model_hash) == (pipe.name, pipe.model_hash)
    a = by_model(PROMPT, seeds=[4], steps=STEPS)[0]
    assert same(a, pipe(PROMPT, seeds=[4], steps=STEPS)[0])  # same seed, fresh load


def test_same_seed_same_pixels_whatever_the_batch(pipe):
    alone = pipe(PROMPT, seeds=[5], steps=STEPS)[0]
    assert same(alone, pipe(PROMPT, seeds=[5], steps=STEPS)[0])  # across calls
    batch = pipe(PROMPT, seeds=[3, 5, 7], steps=STEPS)
    assert same(batch[1], alone)  # across batch compositions
    assert not same(batch[0], batch[1]) and not same(batch[1], batch[2])
    assert same(pipe(PROMPT, seeds=[7, 5], steps=STEPS)[1], alone)


def test_n_means_seeds_zero_to_n_minus_one(pipe):
    by_n = pipe(PROMPT, n=2, steps=STEPS)
    by_seeds = pipe(PROMPT, seeds=[0, 1], steps=STEPS)
    assert len(by_n) == 2 and all(same(a, b) for a, b in zip(by_n, by_seeds))
    assert len(pipe(PROMPT, steps=STEPS)) == 1


def test_the_prompt_matters_and_the_empty_prompt_works(pipe):
    red = pipe(PROMPT, seeds=[0], steps=STEPS)[0]
    other = pipe("a small green triangle at the bottom right", seeds=[0], steps=STEPS)[0]
    assert not same(red, other)
    empty = pipe("", seeds=[0], steps=STEPS)
    assert len(empty) == 1 and empty[0].size == (32, 32) and empty[0].mode == "RGB"
    assert not same(empty[0], red)


def test_negative_prompt_changes_the_output_only_under_guidance(pipe):
    def image(negative, guidance):
        return pipe(PROMPT, negative, seeds=[2], steps=STEPS, guidance=guidance)[0]

    assert not same(image("", 4.0), image("a blue square", 4.0))
    assert same(image("", 1.0), image("a blue square", 1.0))  # no guidance, no negative
    assert not same(image("", 4.0), image("", 1.0))  # guidance matters


def test_the_defaults_come_from_the_model(pipe):
    params = pipe.params(PROMPT)
    assert isinstance(params, GenerationParams)
    assert (params.sampler, params.schedule, params.steps) == ("dpmpp_2m", "karras", 25)
    assert params.guidance == 4.0 and params.size == 32 and params.seeds == (0,)
    assert params.negative_prompt == "" and params.model == "run"
    record = params.for_seed(0)
    assert set(record) == PARAM_KEYS and json.loads(json.dumps(record)) == record


def test_a_prompt_over_the_encoder_limit_warns_and_still_generates(pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="diffuse"):
        images = pipe("red " * 400, seeds=[0], steps=2)
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert len(images) == 1 and images[0].size == (32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 64}, r"size 64 is not available.*32x32"),
        ({"guidance": -1.0}, r"guidance.*-1"),
        ({"guidance": math.nan}, r"guidance.*nan"),
        ({"guidance": math.inf}, r"guidance.*inf"),
        ({"steps": 0}, r"steps.*got 0"),
        ({"steps": 1001}, r"steps.*got 1001"),
        ({"sampler": "foo"}, r"'foo'.*dpmpp_2m.*euler"),
        ({"schedule": "bar"}, r"'bar'.*karras"),
        ({"n": 0}, r"got 0"),
        ({"seeds": []}, r"seed"),
        ({"seeds": [-1]}, r"-1"),
        ({"seeds": [0, 1], "n": 3}, r"2 seeds given for 3 images"),
    ],
)
def test_bad_requests_raise_value_error_naming_the_value(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, **{"steps": STEPS, **kwargs})


def test_a_non_string_prompt_is_refused(pipe):
    with pytest.raises(ValueError, match="string"):
        pipe(None, seeds=[0], steps=STEPS)
    with pytest.raises(ValueError, match="string"):
        pipe(PROMPT, 3, seeds=[0], steps=STEPS)


def test_a_class_conditional_model_is_not_a_text_to_image_model(class_model):
    _, run = class_model
    with pytest.raises(ValueError, match="not a text-to-image model"):
        load_pipeline(run)


def test_a_missing_model_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no trained model"):
        load_pipeline(tmp_path / "nothing-here")
    with pytest.raises(FileNotFoundError):
        load_pipeline(tmp_path)  # an existing folder without a model


# --- `diffuse generate` ------------------------------------------------------------------------


def generate(run, *args: str) -> int:
    return main(["generate", *args, "--model", str(run), "--steps", str(STEPS), "--no-progress"])


def reproduce(run, png: Path, out: Path, *extra: str) -> int:
    return main(
        ["generate", "--model", str(run), "--from-png", str(png), "-o", str(out), "--no-progress"]
        + list(extra)
    )


def open_png(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


def test_cli_writes_one_png_per_seed_with_its_parameters(run, pipe, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert generate(run, PROMPT, "-n", "2", "-o", str(out)) == 0, capsys.readouterr().err
    paths = [tmp_path / "out-0.png", tmp_path / "out-1.png"]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    assert sorted(tmp_path.iterdir()) == paths  # no out.png, no temporary files left
    expected = pipe(PROMPT, seeds=[0, 1], steps=STEPS)
    for seed, (path, image) in enumerate(zip(paths, expected)):
        assert same(open_png(path), image)  # the CLI and the API give the same pixels
        assert read_params(path) == {
            "prompt": PROMPT,
            "negative_prompt": "",
            "seed": seed,
            "sampler": "dpmpp_2m",
            "schedule": "karras",
            "steps": STEPS,
            "guidance": 4.0,
            "size": 32,
            "model": "run",
            "model_hash": pipe.model_hash,
        }


def test_cli_seed_and_seeds_name_the_files(run, tmp_path, capsys):
    one = tmp_path / "one.png"
    assert generate(run, PROMPT, "--seed", "7", "-o", str(one)) == 0, capsys.readouterr().err
    assert one.is_file() and read_params(one)["seed"] == 7  # one image: the path itself
    many = tmp_path / "many.png"
    assert generate(run, PROMPT, "--seeds", "3,5", "-o", str(many)) == 0
    assert read_params(tmp_path / "many-3.png")["seed"] == 3
    assert read_params(tmp_path / "many-5.png")["seed"] == 5
    assert not many.exists()


def test_from_png_reproduces_every_parameter_and_pixel(run, tmp_path, capsys):
    first = tmp_path / "first.png"
    args = ["a white square", "--negative", "a purple circle", "--guidance", "2.5"]
    args += ["--sampler", "euler", "--seed", "11", "-o", str(first)]
    assert generate(run, *args) == 0, capsys.readouterr().err
    stored = read_params(first)
    assert stored["negative_prompt"] == "a purple circle" and stored["guidance"] == 2.5
    assert stored["sampler"] == "euler" and stored["seed"] == 11
    again = tmp_path / "other.png"
    assert reproduce(run, first, again) == 0, capsys.readouterr().err
    assert same(open_png(again), open_png(first))
    assert read_params(again) == stored


def test_cli_grid_is_one_png_and_reproduces(run, pipe, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert generate(run, PROMPT, "-n", "4", "--grid", "-o", str(grid)) == 0
    assert capsys.readouterr().out.split() == [str(grid)]
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    picture = open_png(grid)
    assert picture.size == (2 * 34 + 2, 2 * 34 + 2) and picture.mode == "RGB"  # 2 x 2, padded
    stored = read_params(grid)
    assert stored["seeds"] == [0, 1, 2, 3] and stored["grid"] is True and "seed" not in stored
    assert set(stored) == PARAM_KEYS - {"seed"} | {"seeds", "grid", "nrow"}
    first = np.asarray(picture)[2:34, 2:34]  # the tile of seed 0
    assert np.array_equal(first, np.asarray(pipe(PROMPT, seeds=[0], steps=STEPS)[0]))
    again = tmp_path / "again.png"
    assert reproduce(run, grid, again) == 0, capsys.readouterr().err
    assert same(open_png(again), picture) and read_params(again) == stored


def test_from_png_reproduces_a_grid_with_its_row_length(run, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert generate(run, PROMPT, "-n", "4", "--grid", "--nrow", "4", "-o", str(grid)) == 0
    again = tmp_path / "again.png"
    assert reproduce(run, grid, again) == 0, capsys.readouterr().err
    assert same(open_png(again), open_png(grid))


def test_from_png_refuses_another_models_image_and_a_plain_png(run, tmp_path, capsys):
    from PIL import Image

    params = {"prompt": PROMPT, "negative_prompt": "", "seed": 0, "sampler": "dpmpp_2m"}
    params |= {"schedule": "karras", "steps": 2, "guidance": 4.0, "size": 32, "model": "x"}
    foreign = save_png(
        Image.new("RGB", (32, 32)),
        tmp_path / "foreign.png",
        params | {"model_hash": "0123456789ab"},
        overwrite=False,
    )
    assert reproduce(run, foreign, tmp_path / "a.png") == 2
    assert "0123456789ab" in capsys.readouterr().err
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert reproduce(run, plain, tmp_path / "b.png") == 2
    assert "no diffuse generation parameters" in capsys.readouterr().err
    broken = save_png(Image.new("RGB", (8, 8)), tmp_path / "broken.png", {"seed": 1}, False)
    assert reproduce(run, broken, tmp_path / "c.png") == 2
    assert "incomplete generation parameters" in capsys.readouterr().err
    assert reproduce(run, tmp_path / "missing.png", tmp_path / "d.png") == 2
    assert "missing.png" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("a.png", "b.png", "c.png", "d.png"))


def test_existing_output_is_refused_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert generate(run, PROMPT, "-o", str(out)) == 0
    before = out.read_bytes()
    assert generate(run, "a green star", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert generate(run, "a green star", "-o", str(out), "--overwrite") == 0
    assert out.read_bytes() != before and read_params(out)["prompt"] == "a green star"
    # With several images, one taken name refuses them all before anything is written.
    taken = tmp_path / "many-1.png"
    taken.write_bytes(b"mine")
    assert generate(run, PROMPT, "-n", "2", "-o", str(tmp_path / "many.png")) == 2
    assert "many-1.png" in capsys.readouterr().err
    assert taken.read_bytes() == b"mine" and not (tmp_path / "many-0.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_missing_output_folder_is_created(run, tmp_path):
    out = tmp_path / "new" / "deeper" / "image.png"
    assert generate(run, PROMPT, "-o", str(out)) == 0
    assert out.is_file() and read_params(out)["prompt"] == PROMPT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/out.jpg"], r"\.png.*out\.jpg"),
        (["--steps", "0"], r"steps.*got 0"),
        (["--guidance", "-1"], r"guidance.*-1"),
        (["--guidance", "nan"], r"guidance.*nan"),
        (["--size", "64"], r"size 64"),
        (["--sampler", "foo"], r"'foo'.*valid.*dpmpp_2m"),
        (["--schedule", "bar"], r"'bar'"),
        (["-n", "0"], r"-n must be >= 1, got 0"),
        (["--seeds", "1,x"], r"'1,x'"),
        (["--seeds", "1,2", "-n", "3"], r"-n 3.*2 --seeds"),
    ],
)
def test_cli_bad_values_exit_2_naming_the_value(run, tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "-o" in args else ["-o", str(tmp_path / "out.png")]
    # Fast default steps, unless the case is about --steps itself.
    argv = ["generate", PROMPT, "--model", str(run), "--no-progress", *out]
    if "--steps" not in args:
        argv += ["--steps", str(STEPS)]
    assert main(argv + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffuse generate: error:") and re.search(message, err), err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_needs_a_prompt_or_a_png(run, tmp_path, capsys):
    assert main(["generate", "--model", str(run), "-o", str(tmp_path / "x.png")]) == 2
    assert "PROMPT" in capsys.readouterr().err


def test_repeated_seeds_do_not_half_write(run, tmp_path, capsys):
    out = tmp_path / "out.png"
    code = generate(run, PROMPT, "--seeds", "3,3", "-o", str(out))
    assert code == 0 or list(tmp_path.iterdir()) == [], capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_pixels_unguided_on_any_thread_count(pipe, threads):
    # Odd batches, a lone sample and two threads are the cases CPU kernels treat differently.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kw = {"steps": STEPS, "guidance": 1.0}
        alone = pipe(PROMPT, seeds=[5], **kw)[0]
        for seeds in ([3, 5, 7], [5, 1], [9, 8, 7, 6, 5]):
            assert same(pipe(PROMPT, seeds=seeds, **kw)[seeds.index(5)], alone)
    finally:
        torch.set_num_threads(before)
