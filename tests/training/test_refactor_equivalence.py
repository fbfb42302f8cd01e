"""The trainers reproduce, bit for bit, the losses and weights recorded before they were split
into modules (tests/training/data/refactor_equivalence.json, written by equivalence_runs.py)."""

import json

from equivalence_runs import FIXTURE, record_runs


def test_tiny_runs_repeat_the_recorded_losses_and_weights(tmp_path):
    expected = json.loads(FIXTURE.read_text())
    got = record_runs(tmp_path)
    for name in ("pixel", "vae", "latent", "text"):
        assert got[name]["losses"] == expected[name]["losses"], name  # exactly
        assert got[name]["weights"] == expected[name]["weights"], name


def test_the_trainers_import_neither_pipelines_nor_cli(fresh_imports):
    loaded = fresh_imports("import diffuse.training.loop, diffuse.training.vae_loop")
    assert "diffuse.training.vae_loop" in loaded
    assert [m for m in loaded if m.startswith(("diffuse.pipelines", "diffuse.cli"))] == []
