"""`diffuse convert` and `--model DIFFUSERS_FOLDER`, and every sampler on imported models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tests.interop.conftest import LATENT, PROMPT, diffusers, tiny_dit, tiny_vae

from diffuse.cli import main
from diffuse.fitted_solvers import read_solvers
from diffuse.guidance import classifier_free_guidance
from diffuse.model_folder import INFO_FILE, cached_import, import_diffusers_folder, load_model
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.samplers.fit import fit_schedule
from diffuse.samplers.multistep import unipc
from diffuse.samplers.registry import SAMPLERS, get_sampler, get_schedule


def test_convert_to_diffuse_and_generate(sd_folder, tmp_path):
    out = tmp_path / "sd-diffuse"
    assert main(["convert", str(sd_folder), str(out)]) == 0
    assert (out / INFO_FILE).is_file() and (out / "vae").is_dir()
    assert (out / "text_encoder" / "tokenizer_config.json").is_file()
    info = load_model(out).info
    assert (info.process.kind, info.process.parametrization) == ("discrete_vp", "eps")
    assert info.process.options.steps_offset == 1 and info.text_padding == "max_length"
    assert main(["convert", str(sd_folder), str(out)]) == 2  # exists: refused
    png = tmp_path / "a.png"
    args = ["generate", PROMPT, "--steps", "2", "-o", str(png), "--no-progress"]
    assert main([*args, "--model", str(out)]) == 0
    direct = tmp_path / "b.png"
    assert main([*args[:-3], "-o", str(direct), "--no-progress", "--model", str(sd_folder)]) == 0
    with Image.open(png) as a, Image.open(direct) as b:  # the same model, the same image
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_model_option_converts_once(ddpm_folder, tmp_path):
    first = cached_import(ddpm_folder)
    stamp = (first / INFO_FILE).stat().st_mtime_ns
    assert cached_import(ddpm_folder) == first
    assert (first / INFO_FILE).stat().st_mtime_ns == stamp
    out = tmp_path / "grid.png"
    cmd = ["sample", "--model", str(ddpm_folder), "-n", "2", "--steps", "2", "-o", str(out)]
    assert main([*cmd, "--no-progress"]) == 0 and out.is_file()


def test_convert_back_to_diffusers(ddpm_folder, tmp_path):
    ours = tmp_path / "ours"
    assert main(["convert", str(ddpm_folder), str(ours), "--to", "diffuse"]) == 0
    back = tmp_path / "back"
    assert main(["convert", str(ours), str(back)]) == 0
    original = diffusers.UNet2DModel.from_pretrained(ddpm_folder / "unet").eval()
    exported = diffusers.UNet2DModel.from_pretrained(back / "unet").eval()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500.0])
    with torch.no_grad():
        assert (original(x, t).sample - exported(x, t).sample).abs().max() < 1e-5


def test_convert_refuses_latent_models(sd_folder, tmp_path, capsys):
    ours = tmp_path / "ours"
    main(["convert", str(sd_folder), str(ours)])
    assert main(["convert", str(ours), str(tmp_path / "back")]) == 2
    assert "latent model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sd_pipeline(sd_folder, tmp_path_factory):
    return load_pipeline(import_diffusers_folder(sd_folder, tmp_path_factory.mktemp("m") / "m"))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_on_imported_sd(sd_pipeline, name):
    pipe = sd_pipeline
    model = pipe.model
    denoise = classifier_free_guidance(
        model.denoiser, pipe.conditioning([PROMPT]), pipe.conditioning([""]), 7.5
    )
    levels = get_schedule("karras")(model.denoiser.process, 3)
    x = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = get_sampler(name)(denoise, x * float(levels[0]), levels)
        images = model.decode(out)
    assert images.shape == (1, 3, 2 * LATENT, 2 * LATENT) and bool(torch.isfinite(images).all())


def test_schedule_can_be_fitted_on_imported_sd(sd_pipeline):
    """The few-step schedule fit (`samplers.fit`) runs on an imported model like on any other."""
    model = sd_pipeline.model
    process = model.denoiser.process
    denoise = classifier_free_guidance(
        model.denoiser, sd_pipeline.conditioning([PROMPT]), sd_pipeline.conditioning([""]), 7.5
    )
    x = torch.randn(2, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))
    span = {"level_min": process.level_min, "level_max": process.level_max}
    with torch.no_grad():
        levels = fit_schedule(
            denoise, unipc, x * process.level_max, 3, **span, reference_steps=6, budget=3
        )
    assert levels.shape == (4,) and float(levels[-1]) == 0.0
    assert float(levels[0]) == pytest.approx(process.level_max)
    assert bool((levels[:-1] > levels[1:]).all())


def test_fit_solver_fits_a_solver_on_imported_sd(sd_folder, tmp_path, capsys):
    """`diffuse fit-solver` fits, judges (and stores when better) a bespoke solver for an
    imported Stable Diffusion model, conditioned on the prompts of a file."""
    folder = import_diffusers_folder(sd_folder, tmp_path / "m")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cat\n\nred\na cat\n")
    argv = ["fit-solver", "--model", str(folder), "--steps", "2", "--conditions", "2"]
    more = ["--noises", "2", "--reference-steps", "8", "--effort", "0.05"]
    assert main([*argv, *more]) == 2  # not trained on Shapes captions: prompts are needed
    assert "--prompts FILE" in capsys.readouterr().err
    assert main([*argv, *more, "--prompts", str(prompts)]) == 0
    out = capsys.readouterr().out
    assert "2 prompts from --prompts, guidance 7.5" in out
    assert "2 calls: " in out and "held-out mse" in out
    assert ("2 calls: saved to" in out) == (2 in read_solvers(folder))


def test_dit_pipeline_samples_by_class_name(tmp_path):
    """A DiTPipeline folder (DiT + AutoencoderKL) samples by the id2label names its
    model_index.json records (as the published DiT folders do; save_pretrained omits them)."""
    folder = tmp_path / "dit"
    pipe = diffusers.DiTPipeline(
        transformer=tiny_dit(), vae=tiny_vae(), scheduler=diffusers.DDIMScheduler()
    )
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["id2label"] = {str(i): f"class{i}" for i in range(10)}
    (folder / "model_index.json").write_text(json.dumps(index))
    model = load_model(folder)
    assert model.class_names[:2] == ["class0", "class1"] and model.null_label == 10
    out = tmp_path / "dit.png"
    cmd = ["sample", "--model", str(folder), "--class", "class3", "-n", "2", "--steps", "2"]
    assert main([*cmd, "-o", str(out), "--no-progress"]) == 0
    with Image.open(out) as image:
        assert image.size[0] > 2 * LATENT
