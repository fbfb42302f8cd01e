"""One `--seeds` syntax for every command: 1,5,9 and 0-15 and mixes (sample also takes words)."""

import pytest

from diffuse.cli import main
from diffuse.cli.arguments import CliError, parse_seeds
from diffuse.pngmeta import read_params

PROMPT = "a red circle above a blue square"


@pytest.mark.parametrize(
    ("given", "seeds"),
    [
        ("1,5,9", [1, 5, 9]),
        ("0-15", list(range(16))),
        ("0-3,7", [0, 1, 2, 3, 7]),
        (" 4 , 2-3 ,", [4, 2, 3]),  # spaces and a trailing comma are harmless
        (["0", "1", "2"], [0, 1, 2]),  # space-separated words (sample)
        (["0-1,4", "6"], [0, 1, 4, 6]),
        (None, None),  # not given
    ],
)
def test_parse_seeds_reads_lists_ranges_and_mixes(given, seeds):
    assert parse_seeds(given) == seeds


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("1,x", r"--seeds '1,x': bad seed 'x'"),
        ("5-3", r"bad seed '5-3'"),
        ("1-2-3", r"bad seed '1-2-3'"),
        ("-1", r"seeds must be >= 0, got \[-1\]"),
        (",", r"no seed given"),
    ],
)
def test_parse_seeds_names_a_bad_part(given, message):
    with pytest.raises(CliError, match=message):
        parse_seeds(given)


def test_generate_takes_ranges_and_mixes(t2i_run, tmp_path, capsys):
    out = tmp_path / "out.png"
    argv = ["generate", PROMPT, "--model", str(t2i_run), "--steps", "1", "--no-progress"]
    assert main([*argv, "--seeds", "0-1,4", "-o", str(out)]) == 0, capsys.readouterr().err
    written = [tmp_path / f"out-{seed}.png" for seed in (0, 1, 4)]
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    assert [read_params(p)["seed"] for p in written] == [0, 1, 4]


def test_sample_takes_the_same_syntax_and_words(class_run, tmp_path, capsys):
    argv = ["sample", "--model", str(class_run), "--steps", "1", "--no-progress"]
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert main([*argv, "--seeds", "0-1,4", "-o", str(one)]) == 0, capsys.readouterr().err
    assert main([*argv, "--seeds", "0", "1", "4", "-o", str(two)]) == 0
    assert read_params(one)["seeds"] == read_params(two)["seeds"] == [0, 1, 4]
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_a_bad_seed_is_one_error_line_before_anything_loads(command, tmp_path, capsys):
    # The model folder does not exist: the seeds are refused before it is looked at.
    argv = [command, PROMPT] if command == "generate" else [command]
    argv += ["--model", str(tmp_path / "no-model"), "--seeds", "1,x", "-o", str(tmp_path / "o.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err == f"diffuse {command}: error: --seeds '1,x': bad seed 'x'; use integers and "
        "ranges like 1,5,9 or 0-15\n"
    )
    assert list(tmp_path.iterdir()) == []
