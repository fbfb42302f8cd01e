"""Pipeline tests run tiny networks and MiniLM, on one thread; a tiny class-conditional model."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread) -> None:
    """Every module here runs on one thread (tests/conftest.py, `one_thread`)."""


CLASS_RECIPE = [
    "model.preset='unet-tiny'",
    "model.overrides={base_channels=8, num_groups=4, head_channels=8}",
    "data.source='procedural'",
    "data.resolution=8",
    "data.size=16",
    "data.channels=1",
    "data.num_classes=3",
    "optim.batch_size=8",
    "train.steps=1",
    "train.threads=1",
    "checkpoint.every_steps=1",
]


@pytest.fixture(scope="module")
def class_model(tmp_path_factory):
    """(recipe overrides, run folder) of a one-step class-conditional 8x8 grey model."""
    from diffuse.config import load_recipe
    from diffuse.training.loop import train

    out = tmp_path_factory.mktemp("classes") / "run"
    train(load_recipe(None, CLASS_RECIPE), out)
    return CLASS_RECIPE, out
