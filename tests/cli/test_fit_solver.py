"""Fitted solvers: fitted by `diffuse fit-solver`, stored in the model folder, used by generate
and sample for the fitted step count only, refused when damaged or fitted to other weights."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuse.cli import main
from diffuse.fitted_solvers import FITTED, FittedSolver, read_solvers, save_solver
from diffuse.model_folder import SOLVERS_FILE, load_model, read_info, save_model
from diffuse.pngmeta import read_params
from diffuse.samplers.bespoke import initial_coefficients
from diffuse.samplers.schedules import karras

PROMPT = "a red circle above a blue square"


def model_copy(run: Path, tmp_path: Path) -> Path:
    """A private copy of a fixture's model folder (the fixtures are shared: never written)."""
    return Path(shutil.copytree(run / "model", tmp_path / "model"))


def plain_solver(folder: Path, steps: int, guidance: float) -> FittedSolver:
    """A stored solver without fitting: DPM-Solver++(3M) on Karras levels, unrolled."""
    process = load_model(folder).denoiser.process
    coefficients = initial_coefficients(karras(process, steps), base="dpmpp", order=3)
    return FittedSolver(coefficients, guidance, "dpmpp", 3, 1e-3, "dpmpp_2m/karras", 2e-3, 1.0)


def test_solvers_round_trip_through_the_folder_side_by_side(class_run, tmp_path):
    folder = model_copy(class_run, tmp_path)
    assert read_solvers(folder) == {}
    three, five = plain_solver(folder, 3, 2.0), plain_solver(folder, 5, 2.0)
    save_solver(folder, three)
    save_solver(tmp_path, five)  # a run folder's model/ is found as everywhere else
    assert read_solvers(folder) == {3: three, 5: five}
    assert read_solvers(folder)[5].digest == five.digest != three.digest


def test_a_solver_file_from_another_model_is_refused(class_run, tmp_path, capsys):
    folder = model_copy(class_run, tmp_path)
    save_solver(folder, plain_solver(folder, 3, 2.0))
    other = tmp_path / "other"
    model = load_model(folder)
    net = model.denoiser.net
    with torch.no_grad():
        next(net.parameters()).add_(0.1)  # another model: other weights
    save_model(other, net, read_info(folder))
    shutil.copy(folder / SOLVERS_FILE, other / SOLVERS_FILE)
    with pytest.raises(ValueError, match="was fitted to another model"):
        read_solvers(other)
    argv = ["sample", "--model", str(other), "--steps", "3", "-n", "1", "--no-progress"]
    assert main([*argv, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"diffuse sample: error: {other / SOLVERS_FILE} was fitted to another")
    assert err.count("\n") == 1 and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "text, fault",
    [
        ("{not json", "not valid JSON"),
        ('{"format": 7}', "unknown format version 7"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_a_damaged_solver_file_is_one_error_line(class_run, tmp_path, capsys, text, fault):
    folder = model_copy(class_run, tmp_path)
    (folder / SOLVERS_FILE).write_text(text)
    argv = ["sample", "--model", str(folder), "--steps", "3", "-n", "1", "--no-progress"]
    assert main([*argv, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"diffuse sample: error: {folder / SOLVERS_FILE}") and fault in err
    assert err.count("\n") == 1


def test_a_damaged_entry_is_named(class_run, tmp_path):
    folder = model_copy(class_run, tmp_path)
    save_solver(folder, plain_solver(folder, 3, 2.0))
    path = folder / SOLVERS_FILE
    path.write_text(path.read_text().replace('"a": [', '"a": [1.0, ', 1))
    with pytest.raises(ValueError, match="is damaged: bad solver entry"):
        read_solvers(folder)


def test_fit_solver_saves_only_solvers_better_than_the_plain_samplers(class_run, tmp_path, capsys):
    folder = model_copy(class_run, tmp_path)
    argv = ["fit-solver", "--model", str(folder), "--steps", "3", "4", "--conditions", "3"]
    assert main([*argv, "--reference-steps", "16", "--effort", "0.1", "--max-minutes", "10"]) == 0
    out = capsys.readouterr().out
    assert "3 random classes, guidance 2" in out and re.search(r"fitting time [\d.]+ s", out)
    stored = read_solvers(folder)
    for steps in (3, 4):
        if steps in stored:
            assert f"{steps} calls: saved to" in out
            assert stored[steps].validation_mse < stored[steps].baseline_mse
            assert stored[steps].guidance == 2.0 and stored[steps].steps == steps
        else:
            assert f"{steps} calls: not saved, the fitted solver is no better" in out


def test_fit_solver_draws_captions_for_a_text_model(t2i_run, tmp_path, capsys):
    folder = model_copy(t2i_run, tmp_path)
    argv = ["fit-solver", "--model", str(folder), "--steps", "2", "--conditions", "2"]
    more = ["--noises", "2", "--reference-steps", "8", "--effort", "0.05", "--max-minutes", "10"]
    assert main([*argv, *more]) == 0
    out = capsys.readouterr().out
    assert "2 Shapes captions" in out
    assert ("2 calls: saved to" in out) == (2 in read_solvers(folder))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_generate_uses_the_solver_for_its_step_count_only(t2i_run, tmp_path, capsys):
    folder = model_copy(t2i_run, tmp_path)
    guidance = read_info(folder).sampling.guidance
    solver = plain_solver(folder, 3, guidance)
    save_solver(folder, solver)
    base = ["generate", PROMPT, "--model", str(folder), "--no-progress", "--seed", "4"]

    assert main([*base, "--steps", "3", "-o", str(tmp_path / "fitted.png")]) == 0
    err = capsys.readouterr().err
    assert f"sampling with the solver fitted for 3 steps ({solver.digest})" in err
    meta = read_params(tmp_path / "fitted.png")
    assert (meta["sampler"], meta["schedule"], meta["solver"]) == (FITTED, FITTED, solver.digest)

    # the unrolled DPM-Solver++(3M) solver gives DPM-Solver++(3M)'s image, up to rounding
    plain = ["--sampler", "dpmpp_3m", "--schedule", "karras", "-o", str(tmp_path / "plain.png")]
    argv = [*base, "--steps", "3", *plain]
    assert main(argv) == 0
    assert "solver" not in read_params(tmp_path / "plain.png")
    gap = np.abs(pixels(tmp_path / "fitted.png").astype(int) - pixels(tmp_path / "plain.png"))
    assert gap.max() <= 1

    argv = ["generate", "--from-png", str(tmp_path / "fitted.png"), "--model", str(folder)]
    assert main([*argv, "--no-progress", "-o", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(pixels(tmp_path / "again.png"), pixels(tmp_path / "fitted.png"))
    assert read_params(tmp_path / "again.png") == meta

    capsys.readouterr()
    assert main([*base, "--steps", "4", "-o", str(tmp_path / "four.png")]) == 0
    err = capsys.readouterr().err
    assert "warning: no fitted solver for 4 steps (fitted: 3); sampling with dpmpp_2m" in err
    assert read_params(tmp_path / "four.png")["sampler"] == "dpmpp_2m"

    argv = [*base, "--steps", "3", "--guidance", str(guidance + 1), "-o", str(tmp_path / "g.png")]
    assert main(argv) == 0
    assert "was fitted with guidance" in capsys.readouterr().err
    assert read_params(tmp_path / "g.png")["sampler"] == "dpmpp_2m"


def test_a_png_made_with_a_solver_since_refitted_is_refused(t2i_run, tmp_path, capsys):
    folder = model_copy(t2i_run, tmp_path)
    guidance = read_info(folder).sampling.guidance
    save_solver(folder, plain_solver(folder, 3, guidance))
    base = ["generate", PROMPT, "--model", str(folder), "--no-progress", "--steps", "3"]
    assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    save_solver(folder, plain_solver(folder, 3, guidance + 0.5))  # fitted again
    argv = ["generate", "--from-png", str(tmp_path / "a.png"), "--model", str(folder)]
    assert main([*argv, "--no-progress", "-o", str(tmp_path / "b.png")]) == 2
    assert "it was fitted again since" in capsys.readouterr().err


def test_sample_uses_the_solver_and_an_explicit_sampler_overrides_it(class_run, tmp_path, capsys):
    folder = model_copy(class_run, tmp_path)
    solver = plain_solver(folder, 3, read_info(folder).sampling.guidance)
    save_solver(folder, solver)
    base = ["sample", "--model", str(folder), "-n", "2", "--no-progress", "--steps", "3"]
    assert main([*base, "-o", str(tmp_path / "a.png")]) == 0
    assert read_params(tmp_path / "a.png")["solver"] == solver.digest
    assert main([*base, "--sampler", "euler", "-o", str(tmp_path / "b.png")]) == 0
    meta = read_params(tmp_path / "b.png")
    assert meta["sampler"] == "euler" and "solver" not in meta


def test_fit_solver_stops_at_max_minutes_and_says_what_it_did_not_fit(class_run, tmp_path, capsys):
    folder = model_copy(class_run, tmp_path)
    argv = ["fit-solver", "--model", str(folder), "--steps", "3", "5", "--conditions", "3"]
    assert main([*argv, "--reference-steps", "8", "--max-minutes", "0.0001"]) == 0
    out = capsys.readouterr().out
    assert "--max-minutes 0.0001 reached: not fitted for 3, 5 calls" in out
    assert "0 solver(s) saved" in out and not (folder / SOLVERS_FILE).exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--steps", "3", "--max-minutes", "nan"], "--max-minutes must be > 0, got nan"),
        (["--steps", "3", "--noises", "1"], "--noises must be >= 2"),
    ],
)
def test_fit_solver_refuses_bad_options(class_run, tmp_path, capsys, extra, message):
    folder = model_copy(class_run, tmp_path)
    assert main(["fit-solver", "--model", str(folder), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffuse fit-solver: error: ") and message in err
    assert err.count("\n") == 1 and not (folder / SOLVERS_FILE).exists()


def test_fit_solver_does_not_replace_a_fitted_solver_without_overwrite(class_run, tmp_path, capsys):
    folder = model_copy(class_run, tmp_path)
    save_solver(folder, plain_solver(folder, 3, 2.0))
    before = (folder / SOLVERS_FILE).read_bytes()
    assert main(["fit-solver", "--model", str(folder), "--steps", "3", "5"]) == 2
    err = capsys.readouterr().err
    assert "already holds solvers for 3 steps; pass --overwrite to replace them" in err
    assert (folder / SOLVERS_FILE).read_bytes() == before
