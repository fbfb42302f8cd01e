"""Atomic file writes, file hashes, checked safetensors reads and the width of a progress bar:
small helpers every layer uses.

A write goes to a temporary file in the destination's folder (same file system), is flushed to
disk, then renamed over the destination with `os.replace`, so a reader (or a crash) sees either
the old file or the whole new one, never a part. The file is created with the user's umask
(0644 under the usual 022), like any file `open` creates, whatever mode the writing library
chose (safetensors and `tempfile.mkstemp` make 0600).

    atomic_write_text(folder / "diffusion.json", text)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

__all__ = [
    "MissingModelFileError",
    "ModelFileError",
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "bar_size_options",
    "file_sha256",
    "load_safetensors",
]


class ModelFileError(ValueError):
    """A model file is missing, empty, truncated or damaged; the message names the file."""


class MissingModelFileError(ModelFileError, FileNotFoundError):
    """A model file does not exist (also a FileNotFoundError, for callers that catch that)."""


def _umask() -> int:
    """The process's file-creation mask, read without changing it where the OS allows."""
    try:  # Linux: the mask is reported in /proc, so no other thread sees a changed mask
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable read is a set-and-restore
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a written file's data to disk before it is renamed into place."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` to write to; renamed over `path` when the block ends.

    The caller creates the file (e.g. a library call that takes a file name); if the block
    raises, the temporary file is removed and `path` is untouched. A missing parent folder is
    created.

    Args:
        path: the destination.
    Returns:
        (yields) the temporary path, in the destination's folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp} for {path}")
        # Some writers (safetensors, tempfile) create 0600 files; give the usual new-file mode.
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see the module docstring).

    Args:
        path: the destination; a missing parent folder is created.
        data: the file's new contents.
    Returns:
        `path` as a Path.
    """
    # "x": the name is fresh; the mode is 0666 minus the umask, as for any new file.
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write_bytes`).

    Args:
        path: the destination; a missing parent folder is created.
        text: the file's new contents.
    Returns:
        `path` as a Path.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks.

    Args:
        path: the file.
    Returns:
        64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_safetensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    """Read a safetensors file, turning every way it can be broken into one `ModelFileError`.

    Args:
        path: the .safetensors file.
        device: where the tensors go.
    Returns:
        name -> tensor.
    Raises:
        MissingModelFileError: no such file.
        ModelFileError: an empty, truncated or otherwise unreadable file (what is wrong is in
            the message, e.g. "truncated or damaged header").
    """
    path = Path(path)
    if not path.is_file():
        raise MissingModelFileError(f"{path}: file missing")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path}: empty file (0 bytes); the weights were not written")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as err:
        raise ModelFileError(
            f"{path}: not a readable safetensors file ({size} bytes; truncated or damaged: {err})"
        ) from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot be read: {err}") from None


def bar_size_options(stream: IO[str]) -> dict[str, Any]:
    """The size options of a tqdm progress bar drawn on the terminal `stream`.

    A terminal that reports its size gets a bar that follows it (`dynamic_ncols`). A
    pseudo-terminal nobody sized (`script` run from a program, some IDE and CI consoles)
    reports 0 x 0, on which tqdm draws nothing at all; there the bar is 80 columns wide.
    """
    try:
        if os.get_terminal_size(stream.fileno()).columns > 0:
            return {"dynamic_ncols": True}
    except (OSError, ValueError, AttributeError):
        pass
    return {"ncols": 80, "nrows": 24}


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Write a whole folder at once: yields an empty temporary folder beside `folder`; when the
    block ends without an error its files get the umask's mode and it takes `folder`'s place
    (an existing `folder` is replaced), otherwise it is removed and `folder` is left as it was.

        with atomic_folder(out) as tmp:
            save_file(state, str(tmp / "model.safetensors"))
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        mode = 0o666 & ~_umask()  # files the writers made 0600 (safetensors) get the umask's
        for path in tmp.rglob("*"):
            if path.is_file() and not path.is_symlink():
                os.chmod(path, mode)
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
