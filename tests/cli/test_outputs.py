"""Outputs: checked before any work, never silently replaced, created with the user's umask."""

import os
import stat
from pathlib import Path

import pytest

from diffuse.cli import main

PROMPT = "a red circle above a blue square"


def command_line(command: str, model: Path, output: Path) -> list[str]:
    """A fast `generate` or `sample` call of `model` writing `output`."""
    first = [command, PROMPT] if command == "generate" else [command, "-n", "2"]
    return [*first, "--model", str(model), "--steps", "1", "--no-progress", "-o", str(output)]


def unwritable(kind: str, tmp_path: Path) -> Path:
    """An output path the user cannot write, of one kind."""
    if kind == "file as folder":
        (tmp_path / "notes.txt").write_text("mine")
        return tmp_path / "notes.txt" / "out.png"
    return Path("/proc/diffuse-test/out.png")  # a folder nobody, root included, can write in


# A chmod-555 folder is no test here: CI runs as root, who writes in it anyway.
KINDS = ["file as folder", "system folder"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["generate", "sample"])
def test_an_unwritable_output_is_one_error_line_before_the_model_loads(
    command, kind, tmp_path, capsys
):
    out = unwritable(kind, tmp_path)
    # The model folder does not exist: had it been looked at, the error would say so.
    assert main(command_line(command, tmp_path / "no-model", out)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"diffuse {command}: error: cannot write in {out.parent}: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_a_missing_output_folder_that_can_be_made_is_made(command, t2i_run, class_run, tmp_path):
    model = t2i_run if command == "generate" else class_run
    out = tmp_path / "new" / "deeper" / "out.png"
    assert main(command_line(command, model, out)) == 0
    assert out.is_file()


def test_sample_refuses_to_overwrite_without_overwrite(class_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"mine")
    assert main(command_line("sample", class_run, out)) == 2
    err = capsys.readouterr().err
    assert err == f"diffuse sample: error: {out} exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == b"mine"
    assert main([*command_line("sample", class_run, out), "--overwrite"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_pngs_are_created_with_the_users_umask(command, t2i_run, class_run, tmp_path):
    model = t2i_run if command == "generate" else class_run
    out = tmp_path / "out.png"
    before = os.umask(0o027)
    try:
        assert main(command_line(command, model, out)) == 0
    finally:
        os.umask(before)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # 0o666 & ~0o027, like any new file
