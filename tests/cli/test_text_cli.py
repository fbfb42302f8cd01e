"""`diffuse text generate | infill | eval` on tiny trained models, and its bad-input errors."""

import json
import re
from pathlib import Path

import pytest

from diffuse.cli import main
from diffuse.config import load_recipe
from diffuse.training.text_loop import train_text

REPO = Path(__file__).resolve().parents[2]
IMAGE_MODEL = REPO / "models" / "mnist-unet"
CORPUS = "ROMEO:\nWhat light through yonder window breaks, my lord? [Exit]\n" * 30


@pytest.fixture(scope="module")
def text_models(tmp_path_factory, one_thread) -> dict[str, Path]:
    """A 2-step MDLM and AR model on a tiny corpus (length 32)."""
    root = tmp_path_factory.mktemp("text-models")
    (root / "corpus.txt").write_text(CORPUS)
    folders = {}
    for objective in ("mdlm", "ar"):
        recipe = root / f"{objective}.toml"
        recipe.write_text(
            f'[text]\nobjective = "{objective}"\npreset = "text-tiny"\nwidth = 16\ndepth = 1\n'
            'heads = 2\nlength = 32\n[data]\npath = "corpus.txt"\n[optim]\nbatch_size = 2\n'
            "[train]\nsteps = 2\nthreads = 1\n[eval]\nevery_steps = 0\n[log]\nevery_steps = 1\n"
        )
        folders[objective] = train_text(
            load_recipe(recipe), root / objective, progress=False
        ).model_dir
    return folders


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["text", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_json_is_seeded(text_models, capsys):
    for objective, folder in text_models.items():
        args = ["generate", "--model", str(folder), "--length", "12", "--seeds", "3,4", "--json"]
        if objective == "mdlm":
            args += ["--steps", "6", "--sampler", "ancestral", "--prompt", "ROMEO"]
        code, out, _ = run(capsys, *args)
        assert code == 0
        doc = json.loads(out)
        texts = [s["text"] for s in doc["samples"]]
        assert [s["seed"] for s in doc["samples"]] == [3, 4]
        assert all(len(t) == 12 + (5 if objective == "mdlm" else 0) for t in texts)
        assert json.loads(run(capsys, *args)[1])["samples"] == doc["samples"]


def test_infill_keeps_the_sides(text_models, capsys):
    code, out, _ = run(
        capsys, "infill", "--model", str(text_models["mdlm"]), "ROMEO: [___] my [[lord]]", "--json"
    )
    assert code == 0
    sample = json.loads(out)["samples"][0]
    assert sample["text"].startswith("ROMEO: ") and sample["text"].endswith(" my [lord]")
    assert len(sample["gaps"][0]) == 3


def test_eval_reports_bits_per_char(text_models, capsys):
    code, out, _ = run(capsys, "eval", "--model", str(text_models["mdlm"]), "--times", "2")
    assert code == 0 and "MDLM bound:" in out and "bits/char" in out and "+-" in out
    code, out, _ = run(capsys, "eval", "--model", str(text_models["ar"]), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["objective"] == "ar" and doc["bits_per_char"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["generate", "--prompt", "ROMEO ż", "--length", "4", "--steps", "2"],
            "not in the model's vocabulary of .*'ż'",
        ),
        (["generate", "--length", "0"], "--length must be >= 1, got 0"),
        (
            ["generate", "--length", "8", "--steps", "0"],
            "steps = 0 must be between 1 and .* \\(8\\)",
        ),
        (
            ["generate", "--length", "8", "--steps", "9"],
            "steps = 9 must be between 1 and .* \\(8\\)",
        ),
        (["generate", "--length", "40"], "40 characters, longer than the 32"),
        (["infill", "ROMEO [__"], "unclosed '\\[' at position 6"),
        (["infill", "ROMEO [ab]"], "\\[ab\\] at position 6 is not a gap"),
        (["infill", "no gaps"], "no gap to fill"),
        (["infill", "R [4]", "--steps", "5"], "steps = 5 must be between 1 and .* \\(4\\)"),
        (["generate", "--length", "4", "--steps", "2", "--top-p", "0"], "top_p must be in"),
        (["eval", "--times", "3"], "--times must be even"),
    ],
)
def test_bad_input_is_one_clear_error(text_models, capsys, args, message):
    code, out, err = run(capsys, args[0], "--model", str(text_models["mdlm"]), *args[1:])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("diffuse text: error: ")
    assert re.search(message, err), err


def test_autoregressive_model_cannot_infill(text_models, capsys):
    code, _, err = run(capsys, "infill", "--model", str(text_models["ar"]), "a [_] b")
    assert code == 2 and "autoregressive model cannot infill" in err


def test_wrong_kind_of_model_folder(text_models, capsys):
    code, _, err = run(capsys, "generate", "--model", str(IMAGE_MODEL))
    assert code == 2 and "holds an image model, not a text model" in err
    code = main(["sample", "--model", str(text_models["mdlm"]), "-o", "/nonexistent/x.png"])
    err = capsys.readouterr().err
    assert code == 2 and "is a text model, not an image model; use `diffuse text`" in err
