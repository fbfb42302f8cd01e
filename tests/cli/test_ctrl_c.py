"""Ctrl-C in any command: one line and exit status 130, no traceback and no output file."""

import diffuse.cli.generate as generate_command
from diffuse.cli import main


def test_ctrl_c_while_loading_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_command, "load_pipeline", interrupted)
    out = tmp_path / "out.png"
    assert main(["generate", "a red circle", "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "diffuse generate: interrupted"
    assert not out.exists()
