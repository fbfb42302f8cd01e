"""The commands as a person runs them: on a pseudo-terminal, so stderr is a TTY and the
progress bars draw (a callback's return value once broke `generate` only there)."""

import re

from PIL import Image

from diffuse.pngmeta import read_params

PROMPT = "a red circle above a blue square"


def test_generate_in_a_terminal_writes_the_png_and_shows_the_bar(t2i_run, terminal, tmp_path):
    out = tmp_path / "out.png"
    args = ["generate", PROMPT, "--model", str(t2i_run), "--steps", "3", "-o", str(out)]
    code, shown = terminal(args, tmp_path)
    assert code == 0, shown
    assert "Traceback" not in shown
    assert re.search(r"generate: 100%.*\| 3/3 \[", shown), shown  # the tqdm bar, completed
    assert str(out) in shown
    assert Image.open(out).size == (32, 32) and read_params(out)["prompt"] == PROMPT


def test_an_unsized_terminal_still_shows_the_bar(t2i_run, terminal, tmp_path):
    """A pseudo-terminal nobody sized reports 0 columns (`script` run by a program, some IDE
    consoles); tqdm alone would draw an empty bar there."""
    out = tmp_path / "out.png"
    args = ["generate", PROMPT, "--model", str(t2i_run), "--steps", "3", "-o", str(out)]
    code, shown = terminal(args, tmp_path, columns=0)
    assert code == 0, shown
    assert re.search(r"generate: 100%.*\| 3/3 \[", shown), shown
    assert out.is_file()


def test_sample_in_a_terminal_writes_the_grid_and_shows_the_bar(class_run, terminal, tmp_path):
    out = tmp_path / "grid.png"
    args = ["sample", "--model", str(class_run), "-n", "3", "--steps", "2", "-o", str(out)]
    code, shown = terminal(args, tmp_path)
    assert code == 0, shown
    assert "Traceback" not in shown
    assert re.search(r"sample: 100%.*\| 2/2 \[", shown), shown
    assert f"wrote 3 samples to {out}" in shown
    assert Image.open(out).size == (3 * 10 + 2, 12)


def test_train_in_a_terminal_shows_the_bar_and_writes_the_model(class_recipe, terminal, tmp_path):
    out = tmp_path / "run"
    code, shown = terminal(["train", str(class_recipe), "--out", str(out)], tmp_path)
    assert code == 0, shown
    assert "Traceback" not in shown
    assert re.search(r"train: 100%.*\| 2/2 \[", shown), shown
    assert (out / "model" / "diffusion.json").is_file()
    assert f"trained 2 steps; model in {out / 'model'}" in shown
