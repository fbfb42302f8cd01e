"""Prompts the model cannot draw: the Shapes vocabulary in `generate --help`, one warning line
naming the words a Shapes model never saw, and one line for a truncated prompt."""

import pytest

from diffuse.cli import main
from diffuse.model_folder import read_info
from diffuse.pipelines.text_to_image import default_model_dir
from diffuse.shapes import scenes
from diffuse.shapes.vocabulary import (
    WORDS,
    caption_kind,
    describe,
    trained_on_shapes_captions,
    unknown_words,
)

PROMPT = "a red circle above a blue square"


def test_every_training_caption_is_known_and_paraphrases_are_not():
    for index in range(300):
        scene = scenes.sample_split_scene(0, index, "train")
        assert unknown_words(scenes.caption(scene, 0, index)) == []
    # The paraphrase vocabulary's content words never occur in training captions.
    strange = {
        w
        for i in range(50)
        for w in unknown_words(scenes.paraphrase(scenes.sample_scene(0, i), 0, i))
    }
    assert strange and strange <= scenes.PARAPHRASE_WORDS and not strange & WORDS


def test_unknown_words_are_named_once_in_prompt_order():
    prompt = "A Dragon, flying above a red circle. The dragon's 3 DRAGONS"
    assert unknown_words(prompt) == ["dragon", "flying", "dragon's", "dragons"]
    assert unknown_words("Above and to the left of: a large WHITE star!") == []


def test_the_vocabulary_follows_the_recipes_captions():
    prompt = "Draw a teal tile next to it, then a wee lilac sparkle under it"
    assert unknown_words(prompt, "grammar") == []
    assert unknown_words(prompt) == [
        "draw",
        "teal",
        "tile",
        "next",
        "it",
        "then",
        "wee",
        "lilac",
    ] + [
        "sparkle",
        "under",
    ]
    assert caption_kind({"data": {"source": "scenes"}}) == "templates"
    assert caption_kind({"data": {"source": "scenes", "captions": "grammar"}}) == "grammar"
    assert caption_kind({"data": {"source": "folder"}}) is None
    listing = describe(captions="grammar")
    for word in ("teal", "sparkle", "next to", "under", "below it", "draw"):
        assert word in listing, word
    assert "teal" not in describe()


def test_only_models_trained_on_shapes_captions_are_checked():
    bundled = read_info(default_model_dir())
    assert trained_on_shapes_captions(bundled.recipe)
    assert not trained_on_shapes_captions({"data": {"source": "folder"}})
    assert not trained_on_shapes_captions({"data": {"source": "procedural"}})
    assert not trained_on_shapes_captions(None)  # no recipe recorded: nothing is known


def test_generate_help_lists_the_vocabulary(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    epilog = text[text.index("know only the words") :]
    for word in [*scenes.SHAPES, *scenes.COLOURS, *scenes.SIZES, *scenes.CELL_NAMES.values()]:
        assert word in epilog, word
    for phrase in ("to the left of", "above", "below", "1 to 3"):
        assert phrase in epilog


def generate(run, tmp_path, prompt, *extra):
    out = tmp_path / "out.png"
    argv = ["generate", prompt, "--model", str(run), "--steps", "1", "--no-progress"]
    return main([*argv, "-o", str(out), "--overwrite", *extra])


def test_unknown_words_print_one_warning_line(t2i_run, tmp_path, capsys):
    assert generate(t2i_run, tmp_path, "a dragon flying above a red circle") == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "diffuse generate: warning: the model never saw the words 'dragon', 'flying'; "
        "it draws 1 to 3 shapes (circle, square, triangle, star)"
    )
    assert (tmp_path / "out.png").is_file()  # a warning, not an error
    assert generate(t2i_run, tmp_path, PROMPT, "--negative", "a unicorn") == 0
    assert "the model never saw the word 'unicorn';" in capsys.readouterr().err
    assert generate(t2i_run, tmp_path, PROMPT) == 0
    assert capsys.readouterr().err == ""  # every word known: nothing said


def test_a_truncated_prompt_is_one_clean_warning_line(t2i_run, tmp_path, capsys):
    assert generate(t2i_run, tmp_path, "red " * 300) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "diffuse generate: warning: prompt of 302 tokens truncated to the encoder limit of 256 "
        "tokens: 'red red red red red red red red red red red red red red red '..."
    ]
    assert "UserWarning" not in err
