"""diffuse.io: atomic writes (umask modes, no leftovers), file hashes, checked safetensors reads."""

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffuse.io import (
    MissingModelFileError,
    ModelFileError,
    atomic_folder,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    load_safetensors,
)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run with the common umask 022 (restored afterwards)."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask_not_0600(tmp_path: Path, umask_022) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "b.txt", "h\u00e9")  # parent folder created
    with atomic_path(tmp_path / "c.safetensors") as tmp:
        save_file({"w": torch.ones(2)}, str(tmp))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "h\u00e9"
    for name in ("a.bin", "sub/b.txt", "c.safetensors"):
        assert _mode(tmp_path / name) == 0o644, name
    with atomic_folder(tmp_path / "model") as tmp:
        save_file({"w": torch.ones(2)}, str(tmp / "w.safetensors"))
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c.json").write_text("{}")
    for name in ("model/w.safetensors", "model/sub/c.json"):
        assert _mode(tmp_path / name) == 0o644, name
    os.umask(0o077)
    atomic_write_text(tmp_path / "private.txt", "x")
    assert _mode(tmp_path / "private.txt") == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(target):
        pass
    atomic_write_text(target, "new")  # replaces
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_file_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # more than one 1 MiB block
    atomic_write_bytes(tmp_path / "x", data)
    assert file_sha256(tmp_path / "x") == hashlib.sha256(data).hexdigest()


def test_broken_safetensors_give_one_error_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.arange(1000.0)}, str(good))
    assert torch.equal(load_safetensors(good)["w"], torch.arange(1000.0))
    data = good.read_bytes()
    cases = {
        "empty.safetensors": (b"", "empty file"),
        "cut.safetensors": (data[: len(data) // 2], "truncated or damaged"),
        "header.safetensors": (b"\xff" * 8 + data[8:], "truncated or damaged"),
        "json.safetensors": (data[:8] + b"{not json" + data[17:], "truncated or damaged"),
    }
    for name, (content, what) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match=what) as caught:
            load_safetensors(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(MissingModelFileError, match="missing") as caught:
        load_safetensors(tmp_path / "absent.safetensors")
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, ValueError)


def test_atomic_folder_replaces_a_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    try:
        with atomic_folder(out) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]
